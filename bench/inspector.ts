/** A minimal Chrome DevTools Protocol session over wrangler's inspector proxy (Node's WebSocket: run with --experimental-websocket). */
export async function inspector(port: number) {
  // The proxy refuses a connection without an Origin header. Node's WebSocket (undici) takes an
  // init object with headers where the DOM type has only protocols.
  const init = { headers: { Origin: `http://127.0.0.1:${port}` } };
  const socket = new WebSocket(`ws://127.0.0.1:${port}/ws`, init as unknown as string[]);
  const waiting = new Map<number, (result: unknown) => void>();
  let next = 0;
  socket.onmessage = (message) => {
    const data = JSON.parse(String(message.data)) as { id?: number; result?: unknown };
    if (data.id !== undefined) waiting.get(data.id)?.(data.result);
  };
  await new Promise((resolve, reject) => {
    socket.onopen = resolve;
    socket.onerror = () => reject(new Error(`no inspector on port ${port}`));
  });
  return {
    send: <T>(method: string, params: object = {}) =>
      new Promise<T>((resolve) => {
        const id = ++next;
        waiting.set(id, resolve as (result: unknown) => void);
        socket.send(JSON.stringify({ id, method, params }));
      }),
    close: () => socket.close(),
  };
}
