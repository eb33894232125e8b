// Reads the network configuration from stdin: bounded, strict UTF-8, JSON.
import { isUtf8 } from "node:buffer";
import { readSync } from "node:fs";
import { CniError, Code } from "../core/errors.js";

// A real conflist entry with prevResult is a few KiB; anything near this is not a configuration.
const MAX_BYTES = 1 << 20;
const pause = new Int32Array(new SharedArrayBuffer(4));

/**
 * Reads fd 0 synchronously: the runtime writes the whole configuration and closes the pipe, and a
 * process.stdin stream would cost more start-up time than the read itself.
 */
export function readStdin(fd = 0): Buffer {
  const chunks: Buffer[] = [];
  let size = 0;
  for (;;) {
    const chunk = Buffer.allocUnsafe(64 * 1024);
    let n: number;
    try {
      n = readSync(fd, chunk, 0, chunk.length, null);
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code === "EOF") break;
      // A non-blocking pipe inherited from the runtime: wait for data instead of spinning.
      if (code === "EAGAIN") {
        Atomics.wait(pause, 0, 0, 1);
        continue;
      }
      throw new CniError(
        Code.IoFailure,
        `cannot read the network configuration from stdin: ${(err as Error).message}`,
        "",
        { cause: err },
      );
    }
    if (n === 0) break;
    size += n;
    if (size > MAX_BYTES)
      throw new CniError(Code.DecodeFailure, `network configuration on stdin is larger than ${MAX_BYTES} bytes`);
    chunks.push(chunk.subarray(0, n));
  }
  return Buffer.concat(chunks);
}

export function decodeJson(bytes: Buffer): unknown {
  // isUtf8 checks without a decoder: a fatal TextDecoder costs a pod start a few ms to set up.
  if (!isUtf8(bytes)) throw new CniError(Code.DecodeFailure, "network configuration on stdin is not valid UTF-8");
  // A leading byte order mark is dropped, as TextDecoder does.
  const text = bytes.toString("utf8", bytes[0] === 0xef && bytes[1] === 0xbb && bytes[2] === 0xbf ? 3 : 0);
  if (text.trim() === "") throw new CniError(Code.DecodeFailure, "network configuration on stdin is empty");
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (err) {
    throw new CniError(
      Code.DecodeFailure,
      `network configuration on stdin is not valid JSON: ${(err as Error).message}`,
      "",
      { cause: err },
    );
  }
  if (depth(json) > MAX_DEPTH)
    throw new CniError(Code.DecodeFailure, `network configuration on stdin is nested deeper than ${MAX_DEPTH} levels`);
  return json;
}

// Real configurations nest a handful of levels; a deeper value would only meet recursive code later
// (validation, printing prevResult back) and overflow its stack.
const MAX_DEPTH = 64;

/** Nesting depth, counted without recursion, stopping as soon as it passes the limit. */
function depth(root: unknown): number {
  let deepest = 0;
  const stack: Array<[unknown, number]> = [[root, 1]];
  while (stack.length > 0) {
    const [value, level] = stack.pop() as [unknown, number];
    if (value === null || typeof value !== "object") continue;
    deepest = Math.max(deepest, level);
    if (deepest > MAX_DEPTH) break;
    for (const child of Object.values(value)) stack.push([child, level + 1]);
  }
  return deepest;
}
