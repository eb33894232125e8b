// Tiny TCP/UDP identity server and client, run inside network namespaces by the harness.
//   node echo-net.mjs serve IDENTITY BIND_ADDR tcp:PORT|udp:PORT...   prints "ready" once listening
//   node echo-net.mjs ask tcp|udp HOST PORT TIMEOUT_MS                 prints the answer's identity
// Each probe sends a token of its own (a TCP connection's first line, a UDP datagram) and the server answers
// "IDENTITY TOKEN": ask takes only an answer that carries its token, so no answer can count for another probe
// (a late datagram to a reused source port, a flow NATed elsewhere).
// ask exits 0 with an answer, 2 on timeout, 3 when refused/unreachable, 4 when a TCP answer carries another
// token (a harness fault).
import { randomBytes } from "node:crypto";
import dgram from "node:dgram";
import net from "node:net";

const [mode, ...rest] = process.argv.slice(2);
// A token is one line of at most this many characters.
const MAX_TOKEN = 128;

if (mode === "serve") {
  const [identity, bind, ...specs] = rest;
  const reply = (token) => `${identity} ${token.slice(0, MAX_TOKEN)}\n`;
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
        // A client that never sends its line is dropped, not kept open.
        sock.setTimeout(10_000, () => sock.destroy());
        sock.setEncoding("utf8");
        let line = "";
        sock.on("data", (d) => {
          line += d;
          const end = line.indexOf("\n");
          if (end >= 0) sock.end(reply(line.slice(0, end)));
          else if (line.length > MAX_TOKEN) sock.destroy();
        });
      });
      server.listen({ host: bind, port, ipv6Only: false }, ready);
    } else if (proto === "udp") {
      const sock = dgram.createSocket({ type: net.isIPv6(bind) ? "udp6" : "udp4", ipv6Only: false });
      sock.on("message", (msg, from) => sock.send(reply(msg.toString("utf8").trim()), from.port, from.address));
      sock.bind(port, bind, ready);
    } else {
      process.stderr.write(`bad spec ${spec}\n`);
      process.exit(1);
    }
  }
} else if (mode === "ask") {
  const [proto, host, portText, timeoutText] = rest;
  const port = Number(portText);
  const token = `${process.pid}.${randomBytes(6).toString("hex")}`;
  /** The identity of an answer to this probe, or undefined for an answer to another. */
  const identityIn = (text) => {
    const [identity, answered] = text.trim().split(" ");
    return answered === token ? identity : undefined;
  };
  const finish = (code, answer) => {
    if (answer !== undefined) process.stdout.write(answer);
    process.exit(code);
  };
  setTimeout(() => finish(2), Number(timeoutText ?? 1000));
  if (proto === "tcp") {
    let data = "";
    const sock = net.connect({ host, port }, () => sock.write(`${token}\n`));
    sock.setEncoding("utf8");
    sock.on("data", (d) => (data += d));
    sock.on("end", () => {
      const identity = identityIn(data);
      if (identity !== undefined) finish(0, identity);
      process.stderr.write(`answer without this probe's token ${token}: ${JSON.stringify(data)}\n`);
      finish(4);
    });
    sock.on("error", () => finish(3));
  } else {
    const sock = dgram.createSocket(net.isIPv6(host) ? "udp6" : "udp4");
    sock.on("message", (msg) => {
      const identity = identityIn(msg.toString("utf8"));
      // An answer to an earlier probe that had this source port: not ours, keep waiting.
      if (identity !== undefined) finish(0, identity);
    });
    sock.on("error", () => finish(3));
    sock.connect(port, host, () => sock.send(token));
  }
} else {
  process.stderr.write("usage: echo-net.mjs serve|ask ...\n");
  process.exit(1);
}
