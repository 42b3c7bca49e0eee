export const greeting = 'hello again';
