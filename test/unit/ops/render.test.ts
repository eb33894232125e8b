import { describe, expect, it } from "vitest";
import { statusJson, statusTable } from "../../../src/ops/render.js";
import { statusOf, tables } from "../cached-pods.js";

describe("status", () => {
  const rows = statusOf([tables("default")]);

  it("prints an aligned table within 80 columns and stable JSON", () => {
    const text = statusTable(rows);
    for (const line of text.split("\n")) expect(line.length).toBeLessThanOrEqual(80);
    expect(text.split("\n")[0]).toMatch(/^POD\s+PORT\s+MATCHES\s+TO\s+STATE\s+TABLE$/);
    expect(text).toContain("  - shadowed by default/a\n");
    const json = JSON.parse(statusJson(rows, [])) as { mappings: Array<Record<string, unknown>> };
    expect(Object.keys(json.mappings[0]!)).toEqual([
      "family",
      "pod",
      "network",
      "containerId",
      "chain",
      "protocol",
      "hostPort",
      "destinations",
      "target",
      "state",
      "captures",
      "winner",
      "reachable",
      "backend",
      "reason",
    ]);
  });
});
