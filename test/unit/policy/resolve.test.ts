// An address the pod asked for that leaves its hostPort on no address is refused; the default never is.
import { describe, expect, it } from "vitest";
import { parseNetConf } from "../../../src/core/config.js";
import type { Family } from "../../../src/core/ip.js";
import { parseAnnotation } from "../../../src/policy/annotation.js";
import { resolveMappings } from "../../../src/policy/resolve.js";
import { cniError, NODE } from "../fixtures.js";

const tcp8080 = { hostPort: 8080, containerPort: 80, protocol: "tcp" };

function resolve(conf: Record<string, unknown>, annotation: string | undefined, families: Family[], hostIP = "") {
  const parsed = parseNetConf({
    cniVersion: "1.0.0",
    name: "cbr0",
    ...conf,
    runtimeConfig: { portMappings: [{ ...tcp8080, hostIP }] },
  });
  const a = annotation === undefined ? undefined : parseAnnotation(annotation, "k", "default/web");
  return resolveMappings(parsed.portMappings, parsed.policy, a, NODE, "default/web", new Set(families));
}

describe("an annotation of a family the pod lacks", () => {
  it("is refused with code 100, naming the address and the pod's families", () => {
    const err = cniError(() => resolve({}, "fe80::1", [4]));
    expect(err.code).toBe(100);
    expect(err.message).toBe(
      "host IP fe80::1 (from annotation) for hostPort 8080/tcp of pod default/web is not allowed: no address of the pod's families (IPv4): the hostPort would answer on none",
    );
    expect(cniError(() => resolve({}, "2001:db8::10,2001:db8::11", [4])).message).toContain(
      "host IPs 2001:db8::10, 2001:db8::11 (from annotation) for hostPort 8080/tcp of pod default/web are not allowed",
    );
    expect(cniError(() => resolve({}, "192.0.2.10", [6])).message).toContain("(IPv6)");
  });

  it("is accepted when one of its addresses is of a family the pod has", () => {
    const [r] = resolve({}, "192.0.2.10,2001:db8::99", [4]);
    expect(r?.ips?.map((ip) => ip.text)).toEqual(["192.0.2.10"]);
  });

  it("is not judged for a mapping the pod gets no rules for at all (hostIP 0.0.0.0 on an IPv6-only pod)", () => {
    const [r] = resolve({}, "2001:db8::10", [6], "0.0.0.0");
    expect(r?.ips).toEqual([]);
  });
});

describe("the policy's own default of a family the pod lacks", () => {
  it("starts the pod closed, never failing it", () => {
    const [r] = resolve({ defaultHostIP: ["2001:db8::10"] }, undefined, [4]);
    expect([r?.ips, r?.closed]).toEqual([[], true]);
  });
});
