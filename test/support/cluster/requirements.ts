// Whether a cluster test file can run here. Without root, the Kubernetes binaries, etcd or (for the image's
// tests) the image archive, it is skipped, naming what is missing ("NOT RUN: …"); with PMH_CLUSTER_REQUIRED=1
// (CI) that is a failure, so CI never skips it.
import { describe, it } from "vitest";
import { IS_ROOT } from "../harness.js";
import { missingClusterBinaries } from "./binaries.js";

/** describe() for a cluster test file; `missing`: what else it needs and does not have. */
export function describeCluster(name: string, body: () => void, missing: string[] = []): void {
  const absent = [...(IS_ROOT ? [] : ["root (namespaces, iptables)"]), ...missingClusterBinaries(), ...missing];
  if (absent.length === 0) {
    describe(name, body);
    return;
  }
  const message = `NOT RUN: ${name}: missing ${absent.join("; ")}`;
  if (process.env["PMH_CLUSTER_REQUIRED"] === "1")
    describe(name, () => {
      it("can run here", () => {
        throw new Error(message);
      });
    });
  else {
    console.warn(message);
    describe.skip(name, body);
  }
}
