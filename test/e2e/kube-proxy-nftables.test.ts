// A node whose kube-proxy runs in nftables mode, on the real kernel with real packets: no kube-ipvs0, so
// ClusterIPs are not local addresses and portmap's rules cannot take a Service's traffic; kube-proxy's own
// `ip kube-proxy` table (staged in its shape: a verdict map of ClusterIP . protocol . port, a service chain, an
// endpoint chain's DNAT) sends the ClusterIP to the Service's pod. hostPorts must still answer only on the node's
// addresses — not on another local address such as the pod bridge's gateway — and the keeper must not run a
// pass for kube-proxy's own nftables churn, only for portmap's rules, nor bring a legacy nat table into being.
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, expect, it } from "vitest";
import { describeAsRoot, eventually, useHarness } from "../support/e2e.js";
import {
  bridgeConflist,
  CLUSTER_IP,
  containerdMapping,
  describeRun,
  dnChainName,
  IPVS_DEVICE,
  type NetConfList,
  NODE_IP1,
  NODE_IP2,
  natSave,
  podIPs,
  rulesIn,
  type StartedPod,
  stateDirFor,
  whoAnswers,
} from "../support/harness.js";
import { keeperConfAndBin, type RunningKeeper, startKeeper } from "../support/keeper.js";
import { ipIn, nsRunOk } from "../support/netns.js";
import { pluginPath } from "../support/paths.js";

const GATEWAY = "10.244.1.1";
const SERVICE = "service-ULMVA6XW-default/svc/tcp/http";

/** kube-proxy's nftables table for one Service on CLUSTER_IP:8080 with one endpoint, as `nft -f` input. */
function kubeProxyTable(endpoint: string): string {
  const chain = `endpoint-5OJB2KTY-default/svc/tcp/http__${endpoint}/80`;
  return [
    'add table ip kube-proxy { comment "rules for kube-proxy" ; }',
    "add chain ip kube-proxy nat-prerouting { type nat hook prerouting priority dstnat ; }",
    "add chain ip kube-proxy nat-output { type nat hook output priority -100 ; }",
    "add chain ip kube-proxy services",
    `add chain ip kube-proxy ${SERVICE}`,
    `add chain ip kube-proxy ${chain}`,
    "add map ip kube-proxy service-ips { type ipv4_addr . inet_proto . inet_service : verdict ; }",
    "add rule ip kube-proxy nat-prerouting jump services",
    "add rule ip kube-proxy nat-output jump services",
    "add rule ip kube-proxy services ip daddr . meta l4proto . th dport vmap @service-ips",
    `add element ip kube-proxy service-ips { ${CLUSTER_IP} . tcp . 8080 : goto ${SERVICE} }`,
    `add rule ip kube-proxy ${SERVICE} numgen random mod 1 vmap { 0 : goto ${chain} }`,
    `add rule ip kube-proxy ${chain} meta l4proto tcp dnat to ${endpoint}:80`,
    "",
  ].join("\n");
}

describeAsRoot("a node with kube-proxy in nftables mode (no kube-ipvs0)", () => {
  const h = useHarness({ libcniCache: true });
  let list: NetConfList;
  let stateDir: string;
  let web: StartedPod;
  let keeper: RunningKeeper;
  const asks = (host: string, port: number) =>
    whoAnswers(h.topo.client, "tcp", host, port, { timeoutMs: 700, attempts: 1 });
  const heartbeat = () => (JSON.parse(readFileSync(join(stateDir, "keeper.alive"), "utf8")) as { at: number }).at;

  beforeAll(async () => {
    await ipIn(h.topo.node, "link", "del", IPVS_DEVICE);
    // The client reaches the pod network through the node, so it can knock on the bridge's gateway address.
    await ipIn(h.topo.client, "route", "add", "10.244.0.0/16", "via", NODE_IP1);
    stateDir = stateDirFor(h.topo.ipamDataDir);
    list = bridgeConflist({ dataDir: h.topo.ipamDataDir });
    const svc = await h.startPod("svc", list, { serve: { tcp: [80] } });
    if (!svc.add.ok) throw new Error(describeRun(svc.add));
    await nsRunOk(h.topo.node, "nft", ["-f", "-"], { input: kubeProxyTable(podIPs(svc.add.result).v4!) });
    web = await h.startPod("web", list, { portMappings: [containerdMapping(8080, 80)], serve: { tcp: [80] } });
    if (!web.add.ok) throw new Error(describeRun(web.add));
    // Unscoped on purpose: it shows the gateway address is reachable for a hostPort that takes every address.
    const any = bridgeConflist({ dataDir: h.topo.ipamDataDir, hostip: { defaultHostIP: "any" } });
    const open = await h.startPod("open", any, { portMappings: [containerdMapping(8081, 80)], serve: { tcp: [80] } });
    if (!open.add.ok) throw new Error(describeRun(open.add));
  });

  afterAll(() => {
    if (keeper && keeper.child.exitCode === null) keeper.child.kill("SIGKILL");
  });

  it("answers the hostPort on the node's addresses only, and the ClusterIP through kube-proxy's table", async () => {
    const chain = rulesIn(await natSave(h.topo.node, 4), dnChainName(list.name, web.pod.containerID));
    expect(chain.map((r) => / -d (\S+)/.exec(r)?.[1])).toEqual(
      [NODE_IP1, NODE_IP2, "127.0.0.1"].flatMap((ip) => Array(3).fill(`${ip}/32`)),
    );
    expect(await asks(NODE_IP1, 8080)).toBe("pod-web");
    expect(await asks(NODE_IP2, 8080)).toBe("pod-web");
    expect(await asks(CLUSTER_IP, 8080)).toBe("pod-svc");
    // A local address of the node that is no node IP: an unscoped hostPort takes it, a scoped one does not.
    expect(await asks(GATEWAY, 8081)).toBe("pod-open");
    expect(await asks(GATEWAY, 8080)).toBeNull();
  });

  it("status calls the mapping scoped, capturing nothing", async () => {
    const r = await h.operator(["status", "--json", "--cache-dir", h.cacheDir!, "--state-dir", stateDir]);
    expect(r.code, r.stderr).toBe(0);
    const { mappings } = JSON.parse(r.stdout) as { mappings: Array<Record<string, unknown>> };
    expect(mappings.filter((m) => m["pod"] === "default/web")).toEqual([
      expect.objectContaining({
        pod: "default/web",
        hostPort: 8080,
        destinations: [NODE_IP1, NODE_IP2, "127.0.0.1"],
        state: "scoped",
        captures: [],
        backend: "iptables-nft",
      }),
    ]);
  });

  it("the keeper runs no pass for kube-proxy's nftables changes, and one for portmap's rules", async () => {
    const dirs = { ...keeperConfAndBin(h.topo.tmpDir, list), cacheDir: h.cacheDir!, stateDir };
    // Resync once in ten minutes: any pass during the test is an event's.
    keeper = await startKeeper(h.topo.node, dirs, 600, pluginPath());
    await eventually("the keeper's first pass", async () => existsSync(join(stateDir, "keeper.alive")));
    const first = heartbeat();
    for (let i = 51; i < 61; i++)
      await nsRunOk(h.topo.node, "nft", [
        "add",
        "element",
        "ip",
        "kube-proxy",
        "service-ips",
        `{ 10.96.0.${i} . tcp . 80 : goto ${SERVICE} }`,
      ]);
    await new Promise((r) => setTimeout(r, 2_500));
    expect(heartbeat()).toBe(first);
    await nsRunOk(h.topo.node, "iptables", ["-w", "-t", "nat", "-F", dnChainName(list.name, web.pod.containerID)]);
    await eventually("the pod answers again", async () => (await asks(NODE_IP1, 8080)) === "pod-web");
    expect(heartbeat()).toBeGreaterThan(first);
    expect(await asks(GATEWAY, 8080)).toBeNull();
    expect(keeper.output()).toMatch(/keeper \(rules changed\): iptables-nft IPv4: default\/web \(cbr0, \S+\): rewrote/);
    // Reading both variants created no legacy nat table beside nft's (listing one with iptables-legacy would).
    expect(await nsRunOk(h.topo.node, "cat", ["/proc/net/ip_tables_names"])).not.toMatch(/^nat$/m);
  });
});
