// A UDP client that keeps sending, as a steady UDP flow does: one socket (fixed source port), a datagram
// every INTERVAL_MS to HOST:PORT, each carrying its sequence number as echo-net's token; the identity of each
// answer to one of its own datagrams is printed on its own line. Send errors (ICMP unreachable while no rule
// or server is there) are ignored: the flow just goes on.
//   node udp-stream.mjs HOST PORT INTERVAL_MS SOURCE_PORT    prints "ready" once bound
import dgram from "node:dgram";
import net from "node:net";

const [host, portText, intervalText, sourceText] = process.argv.slice(2);
const sock = dgram.createSocket(net.isIPv6(host) ? "udp6" : "udp4");
let sent = 0;
sock.on("message", (msg) => {
  const [identity, token] = msg.toString("utf8").trim().split(" ");
  if (/^seq-\d+$/.test(token ?? "")) process.stdout.write(`${identity}\n`);
});
sock.on("error", () => {});
sock.bind(Number(sourceText), () => {
  process.stdout.write("ready\n");
  setInterval(() => sock.send(`seq-${++sent}`, Number(portText), host, () => {}), Number(intervalText));
});
