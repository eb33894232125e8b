// The keeper's log (install --watch): its lines as they are (text, the default), or one JSON object a line for
// log pipelines (--log-format json). Information goes to stdout, warnings and errors to stderr, in both.
import type { Out } from "./args.js";

export const LOG_FORMATS = ["text", "json"] as const;
export type LogFormat = (typeof LOG_FORMATS)[number];
export type Level = "info" | "warning" | "error";

/** What a line is about, beyond its text. */
export interface LogFields {
  /** What happened: "repaired", "removed", "closed", "write-failed", … */
  event: string;
  /** What started the pass: resync, address, firewall, conflist, start, confirming. */
  trigger?: string;
  /** namespace/name, else the container ID. */
  pod?: string;
  family?: 4 | 6;
  /** Where the pod's rules are: its iptables chain, nftables' table and chain. */
  chain?: string;
  /** Why: a repair's cause, a closed mapping's reason. */
  cause?: string;
}

export type Log = (level: Level, text: string, fields: LogFields) => void;

export function keeperLog(format: LogFormat, stdout: Out, stderr: Out, now: () => Date = () => new Date()): Log {
  return (level, text, fields) => {
    const out = level === "info" ? stdout : stderr;
    if (format === "text") out(`${text}\n`);
    else out(`${JSON.stringify({ time: now().toISOString(), level, ...fields, message: text })}\n`);
  };
}

/** An Out whose lines (from the installer, which knows no log) go to `log` as `event`. */
export function linesTo(log: Log, level: Level, event: string): Out {
  return (text) => {
    for (const line of text.split("\n")) if (line !== "") log(level, line, { event });
  };
}
