// Reads the network configuration from stdin: bounded, strict UTF-8, JSON.
import { CniError, Code } from "./errors.js";

// A real conflist entry with prevResult is a few KiB; anything near this is not a configuration.
const MAX_BYTES = 1 << 20;

export async function readStdin(stream: NodeJS.ReadableStream = process.stdin): Promise<Buffer> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of stream) {
    const buf = typeof chunk === "string" ? Buffer.from(chunk) : chunk;
    size += buf.length;
    if (size > MAX_BYTES) throw new CniError(Code.DecodeFailure, `network configuration on stdin is larger than ${MAX_BYTES} bytes`);
    chunks.push(buf);
  }
  return Buffer.concat(chunks);
}

export function decodeJson(bytes: Buffer): unknown {
  let text: string;
  try {
    text = new TextDecoder("utf-8", { fatal: true }).decode(bytes);
  } catch {
    throw new CniError(Code.DecodeFailure, "network configuration on stdin is not valid UTF-8");
  }
  if (text.trim() === "") throw new CniError(Code.DecodeFailure, "network configuration on stdin is empty");
  try {
    return JSON.parse(text);
  } catch (err) {
    throw new CniError(Code.DecodeFailure, `network configuration on stdin is not valid JSON: ${(err as Error).message}`);
  }
}
