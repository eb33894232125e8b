// The folders of src/ form layers (docs/layout.md): a folder imports only folders of lower layers, so no two
// folders import each other, directly or around a cycle; and no file imports itself around a cycle of files,
// inside a folder or across. Read from the import statements themselves (lazy `import()` included).
import { readdirSync, readFileSync } from "node:fs";
import { dirname, join, normalize, relative } from "node:path";
import { fileURLToPath } from "node:url";
import { describe, expect, it } from "vitest";

const SRC = fileURLToPath(new URL("../../src/", import.meta.url));

/** Each folder's layer; a folder may import only folders of a lower one. Files directly in src/ are "main". */
const LAYER: Record<string, number> = {
  core: 0,
  host: 1,
  policy: 2,
  iptables: 2,
  nftables: 2,
  pipeline: 3,
  backends: 4,
  commands: 5,
  ops: 5,
  install: 5,
  cli: 6,
  cni: 6,
  main: 7,
};

function sourceFiles(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) =>
    e.isDirectory() ? sourceFiles(join(dir, e.name)) : e.name.endsWith(".ts") ? [join(dir, e.name)] : [],
  );
}

const folderOf = (file: string): string => {
  const parts = relative(SRC, file).split("/");
  return parts.length > 1 ? (parts[0] as string) : "main";
};

// Static imports and re-exports (`from "…"`, `import "…"`) and dynamic `import("…")`, relative ones only.
const IMPORT = /(?:\bfrom\s*|\bimport\s*\(?\s*)["'](\.{1,2}\/[^"']+)["']/g;

/** Node → nodes it imports, with one file:line per edge for the message; `nodeOf` names a file's node. */
function importGraph(nodeOf: (file: string) => string): Map<string, Map<string, string>> {
  const graph = new Map<string, Map<string, string>>();
  for (const file of sourceFiles(SRC)) {
    const from = nodeOf(file);
    const text = readFileSync(file, "utf8");
    for (const m of text.matchAll(IMPORT)) {
      const to = nodeOf(normalize(join(dirname(file), (m[1] as string).replace(/\.js$/, ".ts"))));
      if (to === from) continue;
      const edges = graph.get(from) ?? new Map<string, string>();
      const line = text.slice(0, m.index).split("\n").length;
      if (!edges.has(to)) edges.set(to, `${relative(SRC, file)}:${line}`);
      graph.set(from, edges);
    }
  }
  return graph;
}

/** One folder-level cycle as `a → b → … → a`, or undefined. */
function findCycle(graph: Map<string, Map<string, string>>): string[] | undefined {
  const state = new Map<string, "open" | "done">();
  const path: string[] = [];
  const visit = (node: string): string[] | undefined => {
    if (state.get(node) === "open") return [...path.slice(path.indexOf(node)), node];
    if (state.get(node) === "done") return undefined;
    state.set(node, "open");
    path.push(node);
    for (const next of graph.get(node)?.keys() ?? []) {
      const cycle = visit(next);
      if (cycle) return cycle;
    }
    path.pop();
    state.set(node, "done");
    return undefined;
  };
  for (const node of graph.keys()) {
    const cycle = visit(node);
    if (cycle) return cycle;
  }
  return undefined;
}

describe("the folders of src/", () => {
  const graph = importGraph(folderOf);

  it("import each other without a cycle", () => {
    // The reader sees the imports (static and lazy ones) at all.
    expect([...(graph.get("cni")?.keys() ?? [])]).toEqual(expect.arrayContaining(["commands", "ops", "core"]));
    expect(findCycle(graph)).toBeUndefined();
  });

  it("import only folders of a lower layer", () => {
    const wrong = [...graph].flatMap(([from, edges]) =>
      [...edges]
        .filter(([to]) => !((LAYER[from] ?? -1) > (LAYER[to] ?? Infinity)))
        .map(([to, where]) => `${from} → ${to} (${where})`),
    );
    expect(wrong).toEqual([]);
  });

  it("hold no cycle of files, inside a folder or across folders", () => {
    const files = importGraph((file) => relative(SRC, file));
    // The reader sees imports inside a folder too.
    expect([...(files.get("backends/registry.ts")?.keys() ?? [])]).toContain("backends/iptables.ts");
    expect(findCycle(files)).toBeUndefined();
  });

  it("finds a cycle when there is one", () => {
    const cyclic = new Map([
      ["a", new Map([["b", "a.ts:1"]])],
      ["b", new Map([["c", "b.ts:1"]])],
      ["c", new Map([["a", "c.ts:1"]])],
    ]);
    expect(findCycle(cyclic)).toEqual(["a", "b", "c", "a"]);
  });
});
