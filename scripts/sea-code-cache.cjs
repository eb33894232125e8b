// Run by the single executable's own runtime at build time: `node sea-code-cache.cjs PLUGIN_JS CACHE_OUT`.
// Compiles the plugin's bundle, runs it through the pod starts it exists for (a pod without hostPort; a
// dual-stack pod with a tcp and a udp hostPort on portmap's iptables backend, its first ADD and one that reads
// the chains) against recorded output of the tools it calls, then writes V8's code cache of it: every function
// those ADDs ran comes compiled, and nothing else is deserialized at each start (all functions compiled:
// 585 KB; those that ran: ~280 KB). The runtime checks the cache against its own flags, so they stay at their
// defaults here.
const fs = require("node:fs");
const { mkdtempSync, readFileSync, rmSync, writeFileSync } = fs;
const { tmpdir } = require("node:os");
const { join } = require("node:path");
const { Script } = require("node:vm");

const [source, out] = process.argv.slice(2);

// Recorded in a node namespace (iproute2 6.1, iptables 1.8.9, portmap v1.9.1), trimmed to what is parsed.
const IP_BATCH = [
  '[{"ifname":"lo","flags":["LOOPBACK","UP","LOWER_UP"],"addr_info":[{"family":"inet","local":"127.0.0.1","prefixlen":8,"scope":"host","label":"lo"},{"family":"inet6","local":"::1","prefixlen":128,"scope":"host"}]},{"ifname":"up0","flags":["BROADCAST","MULTICAST","UP","LOWER_UP"],"addr_info":[{"family":"inet","local":"192.0.2.10","prefixlen":24,"scope":"global","label":"up0"},{"family":"inet6","local":"2001:db8::10","prefixlen":64,"scope":"global"},{"family":"inet6","local":"fe80::e859:e7ff:fe86:3300","prefixlen":64,"scope":"link"}]}]',
  '[{"dst":"default","gateway":"192.0.2.1","dev":"up0","flags":[]}]',
  '[{"dst":"default","gateway":"2001:db8::1","dev":"up0","metric":1024,"flags":[],"pref":"medium"}]',
];
const chainLines = (chain, rules) => [`-N ${chain}`, ...rules.map((r) => `-A ${chain} ${r}`)].join("\n");
const PORTMAP_CHAIN = {
  iptables: [
    "-s 10.244.1.0/24 -p tcp -m tcp --dport 8080 -j CNI-HOSTPORT-SETMARK",
    "-s 127.0.0.1/32 -p tcp -m tcp --dport 8080 -j CNI-HOSTPORT-SETMARK",
    "-p tcp -m tcp --dport 8080 -j DNAT --to-destination 10.244.1.5:80",
    "-s 10.244.1.0/24 -p udp -m udp --dport 5353 -j CNI-HOSTPORT-SETMARK",
    "-s 127.0.0.1/32 -p udp -m udp --dport 5353 -j CNI-HOSTPORT-SETMARK",
    "-p udp -m udp --dport 5353 -j DNAT --to-destination 10.244.1.5:53",
  ],
  ip6tables: [
    "-s fd00:10:244:1::/64 -p tcp -m tcp --dport 8080 -j CNI-HOSTPORT-SETMARK",
    "-p tcp -m tcp --dport 8080 -j DNAT --to-destination [fd00:10:244:1::5]:80",
    "-s fd00:10:244:1::/64 -p udp -m udp --dport 5353 -j CNI-HOSTPORT-SETMARK",
    "-p udp -m udp --dport 5353 -j DNAT --to-destination [fd00:10:244:1::5]:53",
  ],
};

const PROC = {
  "/proc/net/fib_triestat": "",
  "/proc/net/if_inet6": "20010db8000000000000000000000010 03 40 00 82      up0\n",
  "/proc/sys/net/netfilter/nf_conntrack_count": "0\n",
  "/proc/net/nf_conntrack": "",
};

const called = [];
/** What the recorded tools print for the calls an ADD makes; anything else fails the build. */
function tool(file, args) {
  called.push(file);
  if (file === "ip" && args.join(" ") === "-j -batch -") return `${IP_BATCH.join("\n")}\n`;
  if (file in PORTMAP_CHAIN && args.at(-2) === "-S") return `${chainLines(args.at(-1), PORTMAP_CHAIN[file])}\n`;
  if (file === "iptables-restore" || file === "ip6tables-restore") return "";
  throw new Error(`sea-code-cache: no recorded output for ${file} ${args.join(" ")}`);
}

const prevResult = {
  cniVersion: "1.1.0",
  interfaces: [{ name: "eth0", sandbox: "/var/run/netns/cni-1" }],
  ips: [
    { address: "10.244.1.5/24", interface: 0, gateway: "10.244.1.1" },
    { address: "fd00:10:244:1::5/64", interface: 0, gateway: "fd00:10:244:1::1" },
  ],
};
const stateDir = mkdtempSync(join(tmpdir(), "pmh-sea-cache-"));
const conf = (portMappings) => ({
  cniVersion: "1.1.0",
  name: "cbr0",
  type: "portmap-hostip",
  stateDir,
  prevResult,
  runtimeConfig: { portMappings, "io.kubernetes.cri.pod-annotations": { "io.kubernetes.pod.name": "web" } },
});
// containerd's capitalised keys, as it sends them. The hostPort pod twice: its container's first ADD swaps
// portmap's rules without reading them; the second (the container has a record now) reads the chains first,
// as every ADD does when the swap is refused (portmap's other options, its nftables backend).
const hostPorts = conf([
  { HostPort: 8080, ContainerPort: 80, Protocol: "tcp", HostIP: "" },
  { HostPort: 5353, ContainerPort: 53, Protocol: "udp", HostIP: "" },
]);
const POD_STARTS = [conf([]), hostPorts, hostPorts];

const ADD_LIMIT_MS = 10_000;
const CNI_ENV = {
  CNI_COMMAND: "ADD",
  CNI_CONTAINERID: "3e9a3d0f9583cdc0e7133aa1",
  CNI_NETNS: "/var/run/netns/cni-1",
  CNI_IFNAME: "eth0",
  CNI_PATH: "/opt/cni/bin",
};

/** One ADD with `stdin`, the tools and stdio recorded; resolves with what it printed on stdout. */
async function add(plugin, stdin) {
  let input = Buffer.from(JSON.stringify(stdin));
  let stdout = "";
  const modules = {
    "node:fs": {
      ...fs,
      readSync(fd, buffer, offset, length, position) {
        if (fd !== 0) return fs.readSync(fd, buffer, offset, length, position);
        const n = input.copy(buffer, offset, 0, Math.min(length, input.length));
        input = input.subarray(n);
        return n;
      },
      writeSync(fd, data, ...rest) {
        if (fd !== 1 && fd !== 2) return fs.writeSync(fd, data, ...rest);
        const bytes = Buffer.from(data).subarray(rest[0] ?? 0);
        if (fd === 1) stdout += bytes.toString();
        return bytes.length;
      },
      // The machine's own /proc stays out of it: a node of a few addresses, no conntrack flow.
      readFileSync: (path, ...rest) => PROC[path] ?? fs.readFileSync(path, ...rest),
    },
    "node:child_process": {
      spawnSync: (file, args) => ({ status: 0, signal: null, stdout: tool(file, args), stderr: "" }),
    },
  };
  Object.assign(process.env, CNI_ENV);
  // The plugin ends a CNI call with process.exit: here that only records the code.
  let exitCode;
  const exit = process.exit;
  process.exit = (code) => {
    exitCode = code;
  };
  try {
    plugin({}, (id) => modules[id] ?? require(id), { exports: {} }, source, __dirname);
    // The ADD runs on promises; it has ended once it exits.
    const deadline = Date.now() + ADD_LIMIT_MS;
    while (exitCode === undefined) {
      if (Date.now() > deadline) throw new Error(`sea-code-cache: ADD did not end within ${ADD_LIMIT_MS} ms`);
      await new Promise((resolve) => setImmediate(resolve));
    }
  } finally {
    process.exit = exit;
    for (const name of Object.keys(CNI_ENV)) delete process.env[name];
  }
  if (exitCode !== 0) throw new Error(`sea-code-cache: ADD exited ${exitCode}: ${stdout}`);
  return stdout;
}

async function main() {
  const script = new Script(readFileSync(source, "utf8"), { filename: "portmap-hostip.js" });
  const plugin = script.runInThisContext();
  try {
    for (const stdin of POD_STARTS) {
      const printed = JSON.parse(await add(plugin, stdin));
      if (JSON.stringify(printed) !== JSON.stringify(prevResult))
        throw new Error(`sea-code-cache: ADD printed ${JSON.stringify(printed)}, not its prevResult`);
    }
  } finally {
    rmSync(stateDir, { recursive: true, force: true });
  }
  // The hostPort pod's rules were read (second ADD) and written in both families: both ways ran whole.
  if (!["iptables", "ip6tables", "iptables-restore", "ip6tables-restore"].every((t) => called.includes(t)))
    throw new Error(`sea-code-cache: the hostPort ADDs ran only ${called.join(", ")}`);
  writeFileSync(out, script.createCachedData());
}

main().catch((err) => {
  process.stderr.write(`${err.stack}\n`);
  process.exitCode = 1;
});
