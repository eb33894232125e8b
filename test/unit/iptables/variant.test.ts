import { describe, expect, it } from "vitest";
import { chooseVariant } from "../../../src/iptables/variant.js";
import { fixture } from "../fixtures.js";

describe("the iptables variant (as kube-proxy's image picks it)", () => {
  const v = (name: string) => ({
    mangle: fixture(`host/iptables-variant/${name}-mangle.save`),
    all: fixture(`host/iptables-variant/${name}-all.save`),
  });
  it("follows kubelet's KUBE-IPTABLES-HINT chain", () => {
    expect(chooseVariant({ legacy: v("legacy-hint"), nft: v("nft-rules") })).toEqual({
      variant: "legacy",
      why: "kubelet's KUBE-IPTABLES-HINT chain is in legacy's mangle table",
    });
  });
  it("else the variant with more rules, nft on a tie", () => {
    const legacy = v("legacy-hint");
    const noHint = { mangle: "", all: legacy.all.replace(/^:KUBE-IPTABLES-HINT .*\n/m, "") };
    expect(chooseVariant({ legacy: noHint, nft: v("nft-rules") }).variant).toBe("nft");
    expect(chooseVariant({ legacy: noHint, nft: v("nft-empty") })).toEqual({
      variant: "legacy",
      why: "1 legacy rules against 0 nft rules",
    });
    expect(chooseVariant({ legacy: { mangle: "", all: "" }, nft: v("nft-empty") }).variant).toBe("nft");
  });
});
