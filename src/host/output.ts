// Writes to stdout/stderr with fs.writeSync: process.stdout on a pipe builds a net.Socket, and loading `net`
// for it costs a pod start ~10 ms, more than the whole write.
import { writeSync } from "node:fs";

/** Writes all of `text` to fd 1 or 2, waiting out a non-blocking pipe that is momentarily full. */
export function writeOutput(fd: 1 | 2, text: string): void {
  const bytes = Buffer.from(text, "utf8");
  let done = 0;
  while (done < bytes.length) {
    try {
      done += writeSync(fd, bytes, done);
    } catch (err) {
      // A non-blocking pipe inherited from the runtime whose reader is behind: wait a moment.
      if ((err as NodeJS.ErrnoException).code !== "EAGAIN") throw err;
      Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 1);
    }
  }
}
