// Replays what containerd 1.6 sent the plugin (test/fixtures/containerd, recorded by test/e2e/cri.test.ts with
// PMH_RECORD_FIXTURES=1) through the plugin's own parsing and policy code: environment, stdin, the result it
// passes on, and the refusals, with the e2e node's network. No kernel.
import { describe, expect, it } from "vitest";
import { readAttachmentEnv } from "../../../src/cni/env.js";
import { parseNetConf } from "../../../src/core/config.js";
import { CniError } from "../../../src/core/errors.js";
import { podLabel } from "../../../src/core/names.js";
import { convertResult, podFamilies } from "../../../src/core/result.js";
import { podScoping, resolvePod } from "../../../src/pipeline/pod.js";
import { type ContainerdCall as Call, containerdFixtures as fixtures, NODE, stdinOf } from "../fixtures.js";

/** What the policy decides for an ADD: the resolved mappings, or the CniError it refuses with. */
function policyOf(call: Call) {
  const env = readAttachmentEnv(call.env, "ADD");
  const conf = parseNetConf(stdinOf(call));
  return () => {
    const scoping = podScoping(conf, podLabel(env), podFamilies(conf.prevResult, env.ifname));
    return scoping ? resolvePod(scoping, NODE) : [];
  };
}

describe("what containerd sends, replayed", () => {
  it("covers every pod shape of the e2e test", () => {
    expect(fixtures.map((f) => f.shape).sort()).toEqual([
      "annotated",
      "annotated-no-port",
      "cluster-ip",
      "cri-host-ip",
      "foreign",
      "node",
      "plain",
      "udp",
    ]);
    for (const f of fixtures) expect(f.runtime, f.shape).toMatch(/^containerd 1\.6\./);
  });

  describe.each(fixtures.map((f) => [f.shape, f] as const))("%s", (_shape, f) => {
    const add = f.calls.find((c) => c.command === "ADD")!;

    it("answers the ADD as recorded: the result passed on unchanged, or the policy's code-100 refusal", () => {
      const decide = policyOf(add);
      if (add.code === 0) {
        expect(decide).not.toThrow();
        const conf = parseNetConf(stdinOf(add));
        expect(convertResult(conf.prevResult!, conf.cniVersion)).toEqual(add.stdout);
        return;
      }
      let refusal: unknown;
      try {
        decide();
      } catch (err) {
        refusal = err;
      }
      expect(refusal).toBeInstanceOf(CniError);
      const { code, msg } = add.stdout as { code: number; msg: string };
      expect(code).toBe(100);
      expect((refusal as CniError).code).toBe(code);
      expect((refusal as CniError).message).toBe(msg);
    });
  });
});
