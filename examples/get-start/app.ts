import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { runtime } from '@molt/app';
import { greeting } from './greeting.ts';

const encoder = new TextEncoder();

/** `/sse` sends ten events one second apart, as the quick-start app does. */
function sse(): Response {
  let i = 0;
  let timer: ReturnType<typeof setInterval> | undefined;
  const body = new ReadableStream<Uint8Array>({
    start(controller) {
      const tick = () => {
        controller.enqueue(encoder.encode(`${greeting} ${i}\n\n`));
        i += 1;
        if (i === 10) {
          clearInterval(timer);
          controller.close();
        }
      };
      tick();
      timer = setInterval(tick, Number(process.env.SSE_INTERVAL_MS ?? 1000));
    },
    cancel() {
      clearInterval(timer);
    },
  });
  return new Response(body, { headers: { 'content-type': 'text/event-stream', 'cache-control': 'no-cache' } });
}

/** `/show-volume` prints the file `my-model` of the volume `get-start-volume`. */
async function showVolume(): Promise<Response> {
  const text = await readFile(join(runtime.volume('get-start-volume').path, 'my-model'), 'utf8');
  return new Response(text);
}

export default {
  fetch(request: Request): Response | Promise<Response> {
    const { pathname } = new URL(request.url);
    switch (pathname) {
      case '/hello':
        return new Response(`${greeting}\n`);
      case '/sse':
        return sse();
      case '/show-volume':
        return showVolume();
      case '/healthz':
        return new Response('ok\n');
      default:
        return new Response('not found\n', { status: 404 });
    }
  },
};
