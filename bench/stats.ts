// Order statistics of timing samples (milliseconds).
export interface Stats {
  n: number;
  median: number;
  min: number;
  max: number;
}

export function median(values: readonly number[]): number {
  const s = [...values].sort((a, b) => a - b);
  const mid = s.length >> 1;
  return s.length === 0
    ? NaN
    : s.length % 2 === 1
      ? (s[mid] as number)
      : ((s[mid - 1] as number) + (s[mid] as number)) / 2;
}

export function stats(values: readonly number[]): Stats {
  return { n: values.length, median: median(values), min: Math.min(...values), max: Math.max(...values) };
}

export const nsToMs = (ns: number): number => ns / 1e6;
