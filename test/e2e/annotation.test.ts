// The pod annotation names one node IP: only that IP answers, and the rules are exactly what portmap itself
// writes when the runtime passes that hostIP (same network name and container ID in a second node namespace),
// whatever portmap's own options (snat, masqAll, markMasqBit) and backend made its rules look like.
import { expect, it } from "vitest";
import { describeAsRoot, useHarness } from "../support/e2e.js";
import {
  againstPortmapAlone,
  bridgeConflist,
  containerdMapping,
  describeRun,
  NODE_IP1,
  NODE_IP2,
  podHostportRules,
  whoAnswers,
} from "../support/harness.js";

const variants = [
  { cniVersion: "0.3.1", portmap: {} },
  { cniVersion: "1.0.0", portmap: {} },
  { cniVersion: "1.0.0", portmap: { snat: false } },
  { cniVersion: "1.0.0", portmap: { masqAll: true } },
  { cniVersion: "1.0.0", portmap: { markMasqBit: 5 } },
];

describeAsRoot.each(variants)(
  "annotation host-ip, cniVersion $cniVersion, portmap $portmap",
  ({ cniVersion, portmap }) => {
    const ours = useHarness();
    const alone = useHarness();

    it("scopes the hostPort to the annotated IP exactly as portmap does for a runtime hostIP", async () => {
      const containerID = `e2e-annotation-${cniVersion.replaceAll(".", "")}-${Object.keys(portmap).join("")}`;
      const r = await againstPortmapAlone(ours, alone, {
        list: (dataDir) => bridgeConflist({ dataDir, cniVersion, portmap, hostip: { defaultHostIP: "any" } }),
        pod: {
          containerID,
          portMappings: [containerdMapping(8080, 80), containerdMapping(5353, 53, "udp")],
          hostIPAnnotation: NODE_IP2,
          serve: { tcp: [80], udp: [53] },
        },
        referenceMappings: [containerdMapping(8080, 80, "tcp", NODE_IP2), containerdMapping(5353, 53, "udp", NODE_IP2)],
      });
      expect(r.ours.ours.code, describeRun(r.ours.add)).toBe(0);
      // ADD prints the result it got.
      expect(r.ours.ours.output).toEqual(r.ours.base.result);

      const rules = await podHostportRules(ours, "cbr0", containerID);
      expect(rules?.length).toBeGreaterThan(0);
      expect(rules).toEqual(await podHostportRules(alone, "cbr0", containerID));
      // Same name and ID: the whole nat table (and portmap's nftables tables) are the ones portmap writes
      // for hostIP 192.0.2.11.
      expect(r.nat.ours).toEqual(r.nat.alone);

      const c = ours.topo.client;
      expect(await whoAnswers(c, "tcp", NODE_IP2, 8080)).toBe("pod-a");
      expect(await whoAnswers(c, "udp", NODE_IP2, 5353)).toBe("pod-a");
      expect(await whoAnswers(c, "tcp", NODE_IP1, 8080)).toBeNull();
      expect(await whoAnswers(c, "udp", NODE_IP1, 5353)).toBeNull();
    });
  },
);
