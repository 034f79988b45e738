// Free TCP ports on 127.0.0.1, asked of the kernel rather than guessed, so that several clusters
// (parallel CI jobs, a developer's `npm start` next to `npm run test:e2e`) never collide.
import net from "node:net";

export const LOOPBACK = "127.0.0.1";

/** Reserves `count` distinct ports at once (all listeners open together), then releases them. */
export async function freePorts(count: number): Promise<number[]> {
  const servers: net.Server[] = [];
  try {
    for (let i = 0; i < count; i++) {
      const server = net.createServer();
      servers.push(server);
      await new Promise<void>((resolve, reject) => {
        server.once("error", reject);
        server.listen(0, LOOPBACK, () => resolve());
      });
    }
    return servers.map((s) => (s.address() as net.AddressInfo).port);
  } finally {
    await Promise.all(servers.map((s) => new Promise<void>((resolve) => s.close(() => resolve()))));
  }
}

export async function freePort(): Promise<number> {
  const [port] = await freePorts(1);
  return port!;
}
