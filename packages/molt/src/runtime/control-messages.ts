/** Messages on the control channel between the server and a worker (Node IPC). */
export type WorkerToServer =
  | { type: 'listening'; port: number }
  | { type: 'load-failed'; error: string };

export type ServerToWorker = { type: 'drain' };
