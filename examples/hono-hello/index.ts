import { Hono } from 'hono';

// A Hono app works unchanged: its default export has fetch(request).
const app = new Hono();
app.get('/', (c) => c.text('hello from hono'));
app.get('/json/:name', (c) => c.json({ hello: c.req.param('name') }));
app.post('/echo', async (c) => c.json(await c.req.json()));

export default app;
