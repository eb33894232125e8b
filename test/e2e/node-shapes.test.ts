// The host-IP policy on real node shapes (issue 11): the default never fails a pod, it leaves out what fails
// the policy and says so; several uplinks, multipath default routes, a Service IP equal to a node address,
// the node's Kubernetes addresses on a private NIC, an uplink down at pod start, and the address kinds a real
// node has. Real packets, on iptables-nft and iptables-legacy.
import { describe, expect, it } from "vitest";
import { describeAsRoot, IPTABLES_VARIANTS, useHarness } from "../support/e2e.js";
import {
  bridgeConflist,
  bridgeUplink,
  CLIENT_IP6,
  containerdMapping,
  DEPRECATED_IP6,
  DUPLICATE_IP6,
  deprecatedAddress,
  describeRun,
  destinations,
  dnChainName,
  duplicateAddress,
  ecmpNexthopGroup6,
  ecmpUplinks,
  type Harness,
  LABELLED_IP,
  LOOPBACK_NODE_IP,
  labelledAddress,
  loopbackNodeIp,
  manyServiceIps,
  manyServiceIps6,
  NODE_IP1,
  NODE_IP2,
  NODE_IP6,
  type PluginConf,
  PRIVATE_IP,
  privateNic,
  rulesIn,
  serviceIpOnNodeAddress,
  sourceRoutedUplink,
  subInterfaceUplink,
  UPLINK,
  UPLINK2_IP,
  UPLINK2_IP6,
  uplinkWithoutCarrier,
  whoAnswers,
} from "../support/harness.js";
import { ipIn, nsRunOk } from "../support/netns.js";

/** Starts pod `name` with hostPort → 80 under our entry `hostip`; returns its chain's destinations per family and our stderr. */
async function startShaped(
  h: Harness,
  name: string,
  hostPort: number,
  hostip: Partial<PluginConf>,
  o: { dualStack?: boolean } = {},
) {
  const list = bridgeConflist({
    dataDir: h.topo.ipamDataDir,
    dualStack: o.dualStack ?? false,
    hostip: { defaultHostIP: "node", ...hostip },
  });
  const started = await h.startPodObserved(name, list, {
    portMappings: [containerdMapping(hostPort, 80)],
    serve: { tcp: [80] },
  });
  expect(started.add.ok, describeRun(started.add)).toBe(true);
  const chain = dnChainName(list.name, started.pod.containerID);
  const dests = (save: readonly string[]) =>
    [...new Set(destinations(rulesIn(save, chain)))].map((d) => d.replace(/\/(32|128)$/, ""));
  return { ...started, chain, v4: dests(started.after.v4), v6: dests(started.after.v6), stderr: started.ours.stderr };
}

describeAsRoot.each(IPTABLES_VARIANTS)("node shapes, $variant", ({ legacy }) => {
  describe("the default never fails a pod", () => {
    const h = useHarness({ legacyIptables: legacy });

    it("an IPv4-only pod on a dual-stack node with IPv4-only allowedHostCIDRs starts, scoped to the node's IPv4 addresses", async () => {
      const p = await startShaped(h, "v4only", 8201, { allowedHostCIDRs: ["192.0.2.0/24"] });
      expect(p.v4).toEqual([NODE_IP1, NODE_IP2, "127.0.0.1"]);
      // The node's IPv6 address is not judged for a pod that gets no IPv6 rules: no note about it.
      expect(p.stderr).not.toContain(NODE_IP6);
      expect(await whoAnswers(h.topo.client, "tcp", NODE_IP1, 8201)).toBe("pod-v4only");
      expect(await whoAnswers(h.topo.node, "tcp", "127.0.0.1", 8201)).toBe("pod-v4only");
    });

    it("a node address outside allowedHostCIDRs is left out with a note naming it and why; the others answer", async () => {
      const p = await startShaped(
        h,
        "leftout",
        8202,
        { allowedHostCIDRs: [`${NODE_IP1}/32`, "2001:db8::/64"] },
        { dualStack: true },
      );
      expect([p.v4, p.v6]).toEqual([[NODE_IP1, "127.0.0.1"], [NODE_IP6]]);
      expect(p.stderr).toContain(`defaultHostIP "node" leaves out ${NODE_IP2}: it is outside allowedHostCIDRs`);
      await h.topo.settleIPv6();
      expect(await whoAnswers(h.topo.client, "tcp", NODE_IP1, 8202)).toBe("pod-leftout");
      expect(await whoAnswers(h.topo.client, "tcp", NODE_IP6, 8202)).toBe("pod-leftout");
      expect(await whoAnswers(h.topo.client, "tcp", NODE_IP2, 8202)).toBeNull();
    });

    it("an explicit defaultHostIP list leaves out an address the node does not have", async () => {
      const p = await startShaped(h, "list", 8203, { defaultHostIP: [NODE_IP2, "198.51.100.77"] });
      expect(p.v4).toEqual([NODE_IP2]);
      expect(p.stderr).toContain("defaultHostIP leaves out 198.51.100.77: it is not an address of this node");
      expect(await whoAnswers(h.topo.client, "tcp", NODE_IP2, 8203)).toBe("pod-list");
    });
  });

  /** NODE_IP2 also on kube-ipvs0, a Service listening there: the pod gets the node's other address only. */
  async function serviceIpLeftOut(h: Harness, name: string, port: number) {
    await h.topo.serve(h.topo.node, "service", { tcp: [port] }, NODE_IP2);
    const p = await startShaped(h, name, port, {});
    expect(p.v4).toEqual([NODE_IP1, "127.0.0.1"]);
    expect(p.stderr).toContain(`leaves out ${NODE_IP2}: it is on excluded interface kube-ipvs0`);
    expect(await whoAnswers(h.topo.client, "tcp", NODE_IP1, port)).toBe(`pod-${name}`);
    expect(await whoAnswers(h.topo.client, "tcp", NODE_IP2, port)).toBe("service");
  }

  describe("a node address that is also on kube-ipvs0 (a Service IP equal to it)", () => {
    const h = useHarness({ legacyIptables: legacy });

    it("is left out by the default; the pod answers on the node's other addresses, the Service on that one", async () => {
      await serviceIpOnNodeAddress(h.topo, NODE_IP2);
      await serviceIpLeftOut(h, "ipvs", 8211);
    });
  });

  describe("the same on a node with many local addresses (IPVS: 1,100 Service IPs on kube-ipvs0, down)", () => {
    const h = useHarness({ legacyIptables: legacy });

    it("decides as on a small node, though it lists only the up interfaces' addresses and the judged ones' holders", async () => {
      await serviceIpOnNodeAddress(h.topo, NODE_IP2);
      await manyServiceIps(h.topo, 1_100);
      const stat = await nsRunOk(h.topo.node, "cat", ["/proc/net/fib_triestat"]);
      expect(Number(/Local:[\s\S]*?Prefixes:\s+(\d+)/.exec(stat)?.[1])).toBeGreaterThan(1_000);
      await serviceIpLeftOut(h, "ipvs-many", 8212);
    });
  });

  describe("a node with many IPv6 local addresses (an IPv6 cluster's 1,100 Service IPs on kube-ipvs0, down)", () => {
    const h = useHarness({ legacyIptables: legacy });

    it("decides as on a small node, listing only the up interfaces' addresses", async () => {
      await manyServiceIps6(h.topo, 1_100);
      const inet6 = await nsRunOk(h.topo.node, "cat", ["/proc/net/if_inet6"]);
      expect(inet6.split("\n").length).toBeGreaterThan(1_000);
      const p = await startShaped(h, "ipvs6", 8213, {}, { dualStack: true });
      expect([p.v4, p.v6]).toEqual([[NODE_IP1, NODE_IP2, "127.0.0.1"], [NODE_IP6]]);
      await h.topo.settleIPv6();
      expect(await whoAnswers(h.topo.client, "tcp", NODE_IP6, 8213)).toBe("pod-ipvs6");
    });
  });

  describe("an IPv4 ECMP default route over two uplinks", () => {
    const h = useHarness({ legacyIptables: legacy });

    it('"node" covers both uplinks\' addresses', async () => {
      const client2 = await ecmpUplinks(h.topo);
      const p = await startShaped(h, "ecmp", 8221, {});
      expect(p.v4).toEqual([NODE_IP1, NODE_IP2, UPLINK2_IP, "127.0.0.1"]);
      expect(await whoAnswers(h.topo.client, "tcp", NODE_IP1, 8221)).toBe("pod-ecmp");
      expect(await whoAnswers(client2, "tcp", UPLINK2_IP, 8221)).toBe("pod-ecmp");
    });
  });

  describe("an IPv6 default route over a nexthop group (FRR's way)", () => {
    const h = useHarness({ legacyIptables: legacy });

    it('"node" covers every nexthop\'s uplink', async () => {
      const client2 = await ecmpNexthopGroup6(h.topo);
      const p = await startShaped(h, "nhgroup", 8222, {}, { dualStack: true });
      expect(p.v6).toEqual([NODE_IP6, UPLINK2_IP6]);
      await h.topo.settleIPv6();
      expect(await whoAnswers(h.topo.client, "tcp", NODE_IP6, 8222)).toBe("pod-nhgroup");
      expect(await whoAnswers(client2, "tcp", UPLINK2_IP6, 8222)).toBe("pod-nhgroup");
    });
  });

  describe("a second uplink with default routes only in a policy-routing table", () => {
    const h = useHarness({ legacyIptables: legacy });

    it('"node" takes the main table\'s default-route uplink, in each family', async () => {
      const client2 = await sourceRoutedUplink(h.topo);
      const p = await startShaped(h, "srcroute", 8223, {}, { dualStack: true });
      expect([p.v4, p.v6]).toEqual([[NODE_IP1, NODE_IP2, "127.0.0.1"], [NODE_IP6]]);
      expect(p.stderr).toBe("");
      await h.topo.settleIPv6();
      expect(await whoAnswers(h.topo.client, "tcp", NODE_IP6, 8223)).toBe("pod-srcroute");
      expect(await whoAnswers(client2, "tcp", UPLINK2_IP6, 8223)).toBeNull();
    });
  });

  describe("the node's InternalIP on a private NIC without the default route", () => {
    const h = useHarness({ legacyIptables: legacy });

    it("kubeNodeIPs adds it to the default-route addresses", async () => {
      const privateClient = await privateNic(h.topo);
      const p = await startShaped(h, "kube", 8231, { kubeNodeIPs: [PRIVATE_IP, NODE_IP1] });
      expect(p.v4).toEqual([NODE_IP1, NODE_IP2, PRIVATE_IP, "127.0.0.1"]);
      expect(await whoAnswers(privateClient, "tcp", PRIVATE_IP, 8231)).toBe("pod-kube");
      expect(await whoAnswers(h.topo.client, "tcp", NODE_IP2, 8231)).toBe("pod-kube");
    });

    it("kubeNodeIPs also adds an address held on lo (announced by BGP)", async () => {
      await loopbackNodeIp(h.topo);
      const p = await startShaped(h, "lo", 8233, { kubeNodeIPs: [LOOPBACK_NODE_IP] });
      expect(p.v4).toEqual([NODE_IP1, NODE_IP2, LOOPBACK_NODE_IP, "127.0.0.1"]);
      expect(await whoAnswers(h.topo.client, "tcp", LOOPBACK_NODE_IP, 8233)).toBe("pod-lo");
    });

    it("nodeIPs still replaces everything", async () => {
      const p = await startShaped(h, "nodeips", 8232, { kubeNodeIPs: [PRIVATE_IP], nodeIPs: [NODE_IP1] });
      expect(p.v4).toEqual([NODE_IP1, "127.0.0.1"]);
    });
  });

  describe("the uplink down at pod start", () => {
    const h = useHarness({ legacyIptables: legacy, libcniCache: true });

    it("the pod starts closed: its hostPort answers on 127.0.0.1 only, with a warning, until reconcile widens it", async () => {
      await ipIn(h.topo.node, "link", "set", UPLINK, "down");
      const p = await startShaped(h, "down", 8241, {}, { dualStack: true });
      expect([p.v4, p.v6]).toEqual([["127.0.0.1"], []]);
      expect(p.stderr).toMatch(
        /warning: pod default\/down .*: hostPort 8241\/tcp: defaultHostIP "node" left no address of this node: it answers only on 127\.0\.0\.1 /,
      );
      expect(await whoAnswers(h.topo.node, "tcp", "127.0.0.1", 8241)).toBe("pod-down");
      await ipIn(h.topo.node, "link", "set", UPLINK, "up");
      await ipIn(h.topo.node, "route", "add", "default", "via", "192.0.2.1", "dev", UPLINK);
      expect(await whoAnswers(h.topo.client, "tcp", NODE_IP1, 8241)).toBeNull();
      const reconcile = await h.operator(["reconcile", "--cache-dir", h.cacheDir!]);
      expect(reconcile.code, reconcile.stdout + reconcile.stderr).toBe(0);
      expect(await whoAnswers(h.topo.client, "tcp", NODE_IP1, 8241)).toBe("pod-down");
    });
  });

  describe("the uplink without carrier at pod start", () => {
    const h = useHarness({ legacyIptables: legacy });

    it("still counts (its routes stay, flagged linkdown): the pod answers there once the carrier is back", async () => {
      await uplinkWithoutCarrier(h.topo, false);
      const p = await startShaped(h, "nocarrier", 8245, {});
      expect(p.v4).toEqual([NODE_IP1, NODE_IP2, "127.0.0.1"]);
      await uplinkWithoutCarrier(h.topo, true);
      expect(await whoAnswers(h.topo.client, "tcp", NODE_IP1, 8245)).toBe("pod-nocarrier");
    });
  });

  describe("address kinds on the uplink", () => {
    const h = useHarness({ legacyIptables: legacy });

    it("a labelled secondary address and a deprecated IPv6 address count; link-local never does", async () => {
      await labelledAddress(h.topo);
      await deprecatedAddress(h.topo);
      const p = await startShaped(h, "kinds", 8251, {}, { dualStack: true });
      expect(p.v4.sort()).toEqual([NODE_IP1, NODE_IP2, LABELLED_IP, "127.0.0.1"].sort());
      expect(p.v6.sort()).toEqual([NODE_IP6, DEPRECATED_IP6].sort());
      await h.topo.settleIPv6();
      expect(await whoAnswers(h.topo.client, "tcp", LABELLED_IP, 8251)).toBe("pod-kinds");
      expect(await whoAnswers(h.topo.client, "tcp", DEPRECATED_IP6, 8251)).toBe("pod-kinds");
    });

    it("an IPv6 address that failed duplicate address detection is left out with a note", async () => {
      await duplicateAddress(h.topo);
      const p = await startShaped(h, "dad", 8252, {}, { dualStack: true });
      expect(p.v6).not.toContain(DUPLICATE_IP6);
      expect(p.stderr).toContain(`leaves out ${CLIENT_IP6}: it failed duplicate address detection`);
    });
  });

  describe("the uplink under a bridge", () => {
    const h = useHarness({ legacyIptables: legacy });

    it("a bridge holding the address and the default route is the uplink; its enslaved port adds nothing", async () => {
      const client2 = await bridgeUplink(h.topo);
      const p = await startShaped(h, "br", 8261, {});
      expect(p.v4).toEqual([UPLINK2_IP, "127.0.0.1"]);
      expect(await whoAnswers(client2, "tcp", UPLINK2_IP, 8261)).toBe("pod-br");
      expect(await whoAnswers(h.topo.client, "tcp", NODE_IP1, 8261)).toBeNull();
    });
  });

  describe("a sub-interface (VLAN-like) holding the address and the default route", () => {
    const h = useHarness({ legacyIptables: legacy });

    it("is the uplink; its lower device adds nothing", async () => {
      const client2 = await subInterfaceUplink(h.topo);
      const p = await startShaped(h, "sub", 8271, {});
      expect(p.v4).toEqual([UPLINK2_IP, "127.0.0.1"]);
      expect(await whoAnswers(client2, "tcp", UPLINK2_IP, 8271)).toBe("pod-sub");
    });
  });
});
