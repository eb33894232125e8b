// The keeper's log lines as the docs show them: each names a reason the keeper gives a pass.
import { readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";

const ROOT = join(import.meta.dirname, "../../..");
const read = (file: string) => readFileSync(join(ROOT, file), "utf8");

describe("the keeper's lines in the docs", () => {
  it("name only reasons the keeper gives its passes", () => {
    const source = ["src/cli/keeper.ts", "src/install/main.ts"].map(read).join("\n");
    const reasons = new Set([...source.matchAll(/(?:trigger|onEntry)\("([^"]+)"\)/g)].map((m) => m[1]));
    const docs = ["README.md", ...readdirSync(join(ROOT, "docs")).map((f) => `docs/${f}`)].map(read).join("\n");
    const shown = [...docs.matchAll(/^keeper \(([^)]+)\): /gm)].map((m) => m[1]);
    expect(shown.length).toBeGreaterThan(0);
    for (const reason of shown) expect(reasons, reason).toContain(reason);
  });
});
