import { describe, expect, it } from "vitest";
import { convertResult, podFamilies } from "../../../src/core/result.js";

const prev = {
  cniVersion: "1.0.0",
  interfaces: [
    { name: "cni0", mac: "aa" },
    { name: "veth1", mac: "bb" },
    { name: "eth0", sandbox: "/var/run/netns/p", mac: "cc" },
  ],
  ips: [
    { address: "10.244.1.5/24", gateway: "10.244.1.1", interface: 2 },
    { address: "2001:db8:244:1::5/64", interface: 2 },
  ],
  routes: [{ dst: "0.0.0.0/0" }],
  dns: {},
};

describe("convertResult", () => {
  it("adds ips[].version for 0.3.x and 0.4.0, content otherwise unchanged", () => {
    const out = convertResult(prev, "0.3.1");
    expect(out).toEqual({
      ...prev,
      cniVersion: "0.3.1",
      ips: [
        { ...prev.ips[0], version: "4" },
        { ...prev.ips[1], version: "6" },
      ],
    });
  });

  it("drops ips[].version for 1.x", () => {
    const legacy = { ...prev, cniVersion: "0.4.0", ips: prev.ips.map((ip, i) => ({ ...ip, version: i ? "6" : "4" })) };
    expect(convertResult(legacy, "1.0.0")).toEqual({ ...prev, cniVersion: "1.0.0" });
  });

  it("takes a prevResult without cniVersion as the config's", () => {
    const { cniVersion: _, ...bare } = prev;
    expect(convertResult(bare, "1.1.0")).toEqual({ ...prev, cniVersion: "1.1.0" });
  });
});

describe("podFamilies", () => {
  it("counts only addresses of the sandbox's CNI_IFNAME, as portmap does", () => {
    expect([...podFamilies(prev, "eth0")]).toEqual([4, 6]);
    expect([...podFamilies(prev, "net1")]).toEqual([]);
    expect([...podFamilies({ ips: [{ address: "10.244.1.5/24" }] }, "eth0")]).toEqual([4]);
    const hostSide = { interfaces: [{ name: "eth0" }], ips: [{ address: "10.244.1.5/24", interface: 0 }] };
    expect([...podFamilies(hostSide, "eth0")]).toEqual([]);
  });
});
