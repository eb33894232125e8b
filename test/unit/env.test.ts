import { describe, expect, it } from "vitest";
import { readAttachmentEnv, readCommand } from "../../src/cni/env.js";
import { podLabel } from "../../src/core/names.js";
import { cniError } from "./fixtures.js";

const base = { CNI_COMMAND: "ADD", CNI_CONTAINERID: "abc123", CNI_NETNS: "/var/run/netns/p", CNI_IFNAME: "eth0" };

describe("CNI environment", () => {
  it("reads a valid ADD environment and kubelet's CNI_ARGS", () => {
    const env = readAttachmentEnv(
      { ...base, CNI_ARGS: "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=web" },
      "ADD",
    );
    expect(env).toMatchObject({ containerId: "abc123", ifname: "eth0", netns: "/var/run/netns/p" });
    expect(podLabel(env)).toBe("default/web (container abc123)");
    expect(podLabel(readAttachmentEnv(base, "ADD"))).toBe("container abc123");
  });

  it.each([
    [{ CNI_COMMAND: undefined }, 4],
    [{ CNI_COMMAND: "FROB" }, 4],
    [{ CNI_CONTAINERID: undefined }, 4],
    [{ CNI_CONTAINERID: "-bad" }, 3],
    [{ CNI_CONTAINERID: "a b" }, 3],
    [{ CNI_IFNAME: "" }, 4],
    [{ CNI_IFNAME: "x".repeat(16) }, 4],
    [{ CNI_IFNAME: "eth/0" }, 4],
    [{ CNI_IFNAME: ".." }, 4],
    [{ CNI_NETNS: undefined }, 4],
    [{ CNI_ARGS: "novalue" }, 4],
  ])("%j → code %i", (change, code) => {
    const env = { ...base, ...change };
    expect(cniError(() => readAttachmentEnv(env, readCommand(env))).code).toBe(code);
  });

  it("does not need CNI_NETNS for DEL", () => {
    expect(readAttachmentEnv({ ...base, CNI_NETNS: undefined }, "DEL").netns).toBe("");
  });
});
