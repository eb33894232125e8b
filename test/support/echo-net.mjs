// Tiny TCP/UDP identity server and client, run inside network namespaces by the harness.
//   node echo-net.mjs serve IDENTITY BIND_ADDR tcp:PORT|udp:PORT...   prints "ready" once listening
//   node echo-net.mjs ask tcp|udp HOST PORT TIMEOUT_MS                 prints the answer
// ask exits 0 with an answer, 2 on timeout, 3 when refused/unreachable.
import dgram from "node:dgram";
import net from "node:net";

const [mode, ...rest] = process.argv.slice(2);

if (mode === "serve") {
  const [identity, bind, ...specs] = rest;
  const reply = `${identity}\n`;
  let pending = specs.length;
  const ready = () => {
    if (--pending === 0) process.stdout.write("ready\n");
  };
  for (const spec of specs) {
    const [proto, portText] = spec.split(":");
    const port = Number(portText);
    if (proto === "tcp") {
      const server = net.createServer((sock) => {
        sock.on("error", () => {});
        sock.end(reply);
      });
      server.listen({ host: bind, port, ipv6Only: false }, ready);
    } else if (proto === "udp") {
      const sock = dgram.createSocket({ type: net.isIPv6(bind) ? "udp6" : "udp4", ipv6Only: false });
      sock.on("message", (_msg, from) => sock.send(reply, from.port, from.address));
      sock.bind(port, bind, ready);
    } else {
      process.stderr.write(`bad spec ${spec}\n`);
      process.exit(1);
    }
  }
} else if (mode === "ask") {
  const [proto, host, portText, timeoutText] = rest;
  const port = Number(portText);
  const finish = (code, answer) => {
    if (answer !== undefined) process.stdout.write(answer.trim());
    process.exit(code);
  };
  setTimeout(() => finish(2), Number(timeoutText ?? 1000));
  if (proto === "tcp") {
    let data = "";
    const sock = net.connect({ host, port });
    sock.setEncoding("utf8");
    sock.on("data", (d) => (data += d));
    sock.on("end", () => finish(0, data));
    sock.on("error", () => finish(3));
  } else {
    const sock = dgram.createSocket(net.isIPv6(host) ? "udp6" : "udp4");
    sock.on("message", (msg) => finish(0, msg.toString("utf8")));
    sock.on("error", () => finish(3));
    sock.connect(port, host, () => sock.send("who?"));
  }
} else {
  process.stderr.write("usage: echo-net.mjs serve|ask ...\n");
  process.exit(1);
}
