// The cgroups containerd made for a node's containers: `<parent>/<container id>` in each hierarchy.
import { existsSync, rmdirSync } from "node:fs";
import { join } from "node:path";

/**
 * rmdir of each `parent/id` (only empty ones go), then of `madeParents` once empty (another run's containers
 * may be there); true when none of the containers' cgroups is left.
 */
export function removeContainerCgroups(parents: string[], madeParents: string[], ids: string[]): boolean {
  let left = false;
  for (const parent of parents) {
    for (const id of ids) {
      const cg = join(parent, id);
      if (!existsSync(cg)) continue;
      try {
        rmdirSync(cg);
      } catch {
        left = true;
      }
    }
  }
  for (const parent of madeParents) {
    try {
      rmdirSync(parent);
    } catch {
      // not empty or gone
    }
  }
  return !left;
}
