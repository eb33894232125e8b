// A unified diff of two small texts (conflists are a few dozen lines), for --dry-run.

const CONTEXT = 3;

export function unifiedDiff(before: string, after: string, file: string): string {
  const a = lines(before);
  const b = lines(after);
  // Longest common subsequence table, from the ends, so the walk below goes forward.
  const lcs: number[][] = Array.from({ length: a.length + 1 }, () => new Array<number>(b.length + 1).fill(0));
  for (let i = a.length - 1; i >= 0; i--) {
    for (let j = b.length - 1; j >= 0; j--) {
      lcs[i]![j] = a[i] === b[j] ? lcs[i + 1]![j + 1]! + 1 : Math.max(lcs[i + 1]![j]!, lcs[i]![j + 1]!);
    }
  }
  const ops: Array<{ kind: " " | "-" | "+"; line: string; i: number; j: number }> = [];
  let i = 0;
  let j = 0;
  while (i < a.length || j < b.length) {
    if (i < a.length && j < b.length && a[i] === b[j]) ops.push({ kind: " ", line: a[i]!, i: i++, j: j++ });
    else if (j < b.length && (i === a.length || lcs[i]![j + 1]! >= lcs[i + 1]![j]!))
      ops.push({ kind: "+", line: b[j]!, i, j: j++ });
    else ops.push({ kind: "-", line: a[i]!, i: i++, j });
  }

  const out = [`--- ${file}`, `+++ ${file}`];
  let k = 0;
  while (k < ops.length) {
    if (ops[k]!.kind === " ") {
      k++;
      continue;
    }
    // A hunk: this change, every change closer than twice the context to it, and context around.
    let end = k;
    for (let next = k; next < ops.length && next - end <= 2 * CONTEXT; next++) if (ops[next]!.kind !== " ") end = next;
    const from = Math.max(0, k - CONTEXT);
    const to = Math.min(ops.length, end + CONTEXT + 1);
    const hunk = ops.slice(from, to);
    const oldCount = hunk.filter((op) => op.kind !== "+").length;
    const newCount = hunk.filter((op) => op.kind !== "-").length;
    const start = ops[from]!;
    out.push(`@@ -${start.i + (oldCount ? 1 : 0)},${oldCount} +${start.j + (newCount ? 1 : 0)},${newCount} @@`);
    out.push(...hunk.map((op) => op.kind + op.line));
    k = to;
  }
  return `${out.join("\n")}\n`;
}

function lines(text: string): string[] {
  const result = text.split("\n");
  // A final newline ends the last line rather than starting an empty one.
  if (result[result.length - 1] === "") result.pop();
  return result;
}
