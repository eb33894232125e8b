// Replays what containerd 1.6 sent the plugin (test/fixtures/containerd, recorded by test/e2e/cri.test.ts with
// PMH_RECORD_FIXTURES=1) through the plugin's own parsing and policy code: environment, stdin, the result it
// passes on, and the refusals, with the e2e node's network. No kernel.
import { readdirSync, readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { describe, expect, it } from "vitest";
import { readAttachmentEnv, readCommand } from "../../src/cni/env.js";
import { decodeJson } from "../../src/cni/stdin.js";
import { parseEnvelope, parseNetConf } from "../../src/core/config.js";
import { CniError } from "../../src/core/errors.js";
import { podLabel } from "../../src/core/names.js";
import { convertResult, podFamilies } from "../../src/core/result.js";
import { podScoping, resolvePod } from "../../src/pipeline/pod.js";
import { NODE } from "./fixtures.js";

interface Call {
  command: string;
  env: Record<string, string>;
  stdin: unknown;
  code: number;
  stdout: unknown;
}

interface Fixture {
  runtime: string;
  shape: string;
  request: {
    portMappings: Array<{ protocol?: string; containerPort: number; hostPort?: number; hostIp?: string }>;
    annotations: Record<string, string>;
  };
  calls: Call[];
}

const dir = fileURLToPath(new URL("../fixtures/containerd/", import.meta.url));
const fixtures: Fixture[] = readdirSync(dir)
  .filter((f) => f.endsWith(".json"))
  .sort()
  .map((f) => JSON.parse(readFileSync(dir + f, "utf8")) as Fixture);

/** The bytes on the plugin's stdin, through the plugin's own decoder. */
const stdinOf = (call: Call) => decodeJson(Buffer.from(JSON.stringify(call.stdin)));

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

    it("is one ADD, then a DEL per teardown (after a failed ADD, one; after Stop and Remove, two)", () => {
      expect(f.calls.map((c) => c.command)).toEqual(add.code === 0 ? ["ADD", "DEL", "DEL"] : ["ADD", "DEL"]);
      for (const c of f.calls) expect(readCommand(c.env)).toBe(c.command);
    });

    it("parses the ADD: the CRI port mappings (capitalised keys, lowercase protocol) and the annotation", () => {
      const conf = parseNetConf(stdinOf(add));
      expect(
        conf.portMappings.map((m) => ({
          hostPort: m.hostPort,
          containerPort: m.containerPort,
          protocol: m.protocol,
          hostIp: m.hostIp?.text ?? "",
        })),
      ).toEqual(
        f.request.portMappings.map((m) => ({
          hostPort: m.hostPort,
          containerPort: m.containerPort,
          protocol: (m.protocol ?? "TCP").toLowerCase(),
          hostIp: m.hostIp ?? "",
        })),
      );
      expect(conf.annotationValue).toBe(f.request.annotations["portmap-hostip/host-ip"]);
      expect(conf.prevResult?.ips?.length).toBe(1);
    });

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

    it("accepts every DEL: no netns (after Stop), no prevResult (cniVersion 0.3.1), CNI_ARGS in another order", () => {
      for (const del of f.calls.filter((c) => c.command === "DEL")) {
        expect(del.code).toBe(0);
        expect(readAttachmentEnv(del.env, "DEL").containerId).toBe(add.env["CNI_CONTAINERID"]);
        expect(parseEnvelope(stdinOf(del)).name).toBe("cri-e2e");
      }
    });
  });

  it("containerd sends null for a capability it has no value for (a pod without annotations)", () => {
    const plain = fixtures.find((f) => f.shape === "plain")!.calls[0]!;
    expect((plain.stdin as { runtimeConfig: Record<string, unknown> }).runtimeConfig).toEqual({
      "io.kubernetes.cri.pod-annotations": null,
    });
    const conf = parseNetConf(stdinOf(plain));
    expect(conf.annotationValue).toBeUndefined();
    expect(conf.portMappings).toEqual([]);
    const node = fixtures.find((f) => f.shape === "node")!.calls[0]!;
    expect(
      parseNetConf({
        ...(node.stdin as object),
        runtimeConfig: { portMappings: null, "io.kubernetes.cri.pod-annotations": null },
      }).portMappings,
    ).toEqual([]);
  });
});
