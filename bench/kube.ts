// Unrelated nat rules shaped like kube-proxy's iptables mode: a KUBE-SERVICES rule per ClusterIP, a KUBE-SVC chain
// per service (masquerade mark for off-cluster sources, random jumps to its endpoints) and a KUBE-SEP chain per
// endpoint (hairpin mark, DNAT). ClusterIPs from 10.100.0.0/16 (inside 10.96.0.0/12), endpoints from
// 10.244.128.0/17. Eight base rules plus eight per service (two endpoints each), so every size that is 8 + 8n
// comes out exact.
import { createHash } from "node:crypto";

const BASE_RULES = [
  '-A PREROUTING -m comment --comment "kubernetes service portals" -j KUBE-SERVICES',
  '-A OUTPUT -m comment --comment "kubernetes service portals" -j KUBE-SERVICES',
  '-A POSTROUTING -m comment --comment "kubernetes postrouting rules" -j KUBE-POSTROUTING',
  "-A KUBE-MARK-MASQ -j MARK --set-xmark 0x4000/0x4000",
  "-A KUBE-MARK-DROP -j MARK --set-xmark 0x8000/0x8000",
  "-A KUBE-POSTROUTING -m mark ! --mark 0x4000/0x4000 -j RETURN",
  "-A KUBE-POSTROUTING -j MARK --set-xmark 0x4000/0x0",
  '-A KUBE-POSTROUTING -m comment --comment "kubernetes service traffic requiring SNAT" -j MASQUERADE --random-fully',
];
const BASE_CHAINS = ["KUBE-SERVICES", "KUBE-MARK-MASQ", "KUBE-MARK-DROP", "KUBE-POSTROUTING"];
const RULES_PER_SERVICE = 8;
const ENDPOINTS_PER_SERVICE = 2;
const PORTS = [80, 443, 8080, 9090, 6379, 5432, 3306, 8443];

const BASE32 = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";

/** kube-proxy's chain suffix: base32 of a SHA-256, 16 characters. */
function chainSuffix(text: string): string {
  const bytes = createHash("sha256").update(text).digest();
  let bits = 0;
  let value = 0;
  let out = "";
  for (const byte of bytes) {
    value = (value << 8) | byte;
    bits += 8;
    while (bits >= 5 && out.length < 16) {
      out += BASE32[(value >>> (bits - 5)) & 31];
      bits -= 5;
    }
  }
  return out;
}

function ipv4(base: [number, number], index: number): string {
  return `${base[0]}.${base[1] + (index >> 16)}.${(index >> 8) & 255}.${index & 255}`;
}

/** Rules for services [from, to): chain declarations first, then the rules. */
function serviceRules(from: number, to: number): { chains: string[]; rules: string[] } {
  const chains: string[] = [];
  const rules: string[] = [];
  for (let k = from; k < to; k++) {
    const proto = k % 10 === 9 ? "udp" : "tcp";
    const port = proto === "udp" ? 53 : (PORTS[k % PORTS.length] as number);
    const name = `ns${k % 40}/svc-${k}:${proto === "udp" ? "dns" : "http"}`;
    const clusterIP = ipv4([10, 100], k + 1);
    const svc = `KUBE-SVC-${chainSuffix(name + proto)}`;
    chains.push(svc);
    const portMatch = `-p ${proto} -m comment --comment "${name} cluster IP" -m ${proto} --dport ${port}`;
    rules.push(`-A KUBE-SERVICES -d ${clusterIP}/32 ${portMatch} -j ${svc}`);
    rules.push(`-A ${svc} ! -s 10.244.0.0/16 -d ${clusterIP}/32 ${portMatch} -j KUBE-MARK-MASQ`);
    for (let e = 0; e < ENDPOINTS_PER_SERVICE; e++) {
      const endpoint = ipv4([10, 244], 128 * 256 + k * ENDPOINTS_PER_SERVICE + e);
      const target = `${endpoint}:${8000 + (k % 100)}`;
      const sep = `KUBE-SEP-${chainSuffix(name + proto + target)}`;
      chains.push(sep);
      const left = ENDPOINTS_PER_SERVICE - e;
      const statistic = left > 1 ? ` -m statistic --mode random --probability ${(1 / left).toFixed(11)}` : "";
      rules.push(`-A ${svc} -m comment --comment "${name} -> ${target}"${statistic} -j ${sep}`);
      rules.push(`-A ${sep} -s ${endpoint}/32 -m comment --comment "${name}" -j KUBE-MARK-MASQ`);
      rules.push(`-A ${sep} -p ${proto} -m comment --comment "${name}" -m ${proto} -j DNAT --to-destination ${target}`);
    }
  }
  return { chains, rules };
}

/** Services needed for `size` rules (sizes are 0 or 8 + 8n). */
export function servicesFor(size: number): number {
  if (size === 0) return 0;
  if (size < BASE_RULES.length || (size - BASE_RULES.length) % RULES_PER_SERVICE !== 0) {
    throw new Error(
      `a kube-proxy-like table has 0 or ${BASE_RULES.length} + ${RULES_PER_SERVICE}·n rules, not ${size}`,
    );
  }
  return (size - BASE_RULES.length) / RULES_PER_SERVICE;
}

/**
 * iptables-restore --noflush input that grows the table from `fromSize` to `toSize` unrelated rules. Only the
 * chains it creates are declared (declaring an existing chain would flush it).
 */
export function growPayload(fromSize: number, toSize: number): { payload: string; rules: number } {
  const from = servicesFor(fromSize);
  const to = servicesFor(toSize);
  const { chains, rules } = serviceRules(from, to);
  const base = fromSize === 0 && toSize > 0;
  const allChains = base ? [...BASE_CHAINS, ...chains] : chains;
  const allRules = base ? [...BASE_RULES, ...rules] : rules;
  const payload = ["*nat", ...allChains.map((c) => `:${c} - [0:0]`), ...allRules, "COMMIT", ""].join("\n");
  return { payload, rules: allRules.length };
}
