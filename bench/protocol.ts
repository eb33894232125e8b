// What the bench and its in-namespace runner say to each other (JSON lines over a unix socket).
export interface Job {
  file: string;
  args: string[];
  /** The child's whole environment (nothing is inherited from the runner). */
  env: Record<string, string>;
  input?: string;
  /** Wrap in GNU time to read the peak RSS and CPU time (then the timing is not used). */
  rss?: boolean;
  timeoutMs?: number;
}

export interface JobResult {
  code: number;
  /** Spawn to exit, nanoseconds. */
  ns: number;
  stdout: string;
  stderr: string;
  rssKiB?: number;
  /** With rss: user + system CPU time of the process and its waited-for children (10 ms resolution). */
  cpuMs?: number;
}

export type Request = { id: number; op: "run"; job: Job } | { id: number; op: "batch"; jobs: Job[] };

export interface Response {
  id: number;
  results: JobResult[];
  /** batch: first spawn to last exit, nanoseconds. */
  wallNs: number;
}
