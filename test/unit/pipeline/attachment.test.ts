import { describe, expect, it } from "vitest";
import { portmapBackendOf } from "../../../src/pipeline/attachment.js";
import { cachedPod as pod } from "../cached-pods.js";

describe("the backend of a cached attachment", () => {
  it("gives each backend the attachments whose portmap used it", () => {
    expect(portmapBackendOf(pod("a", 1))).toBe("iptables");
    expect(portmapBackendOf(pod("a", 1, { backend: "iptables" }))).toBe("iptables");
    expect(portmapBackendOf(pod("a", 1, { backend: "nftables" }))).toBe("nftables");
  });
});
