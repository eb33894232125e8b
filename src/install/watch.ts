// Runs `sync` now, whenever something changes in a directory, and every second regardless, until `signal`.
// A failing `sync` is logged (once per distinct error, not every second) and retried.
import { type FSWatcher, watch } from "node:fs";

// flannel writes its conflist with `cp`: let a burst of events settle before reading the file.
const SETTLE_MS = 100;
// inotify can miss changes (overlay and network filesystems, a directory replaced): poll as well.
const POLL_MS = 1000;

export function watchDirectory(
  dir: string,
  sync: () => Promise<void>,
  signal: AbortSignal,
  log: (message: string) => void,
): Promise<void> {
  return new Promise((resolve) => {
    let running: Promise<void> | undefined;
    let again = false;
    let settle: NodeJS.Timeout | undefined;
    let lastError: string | undefined;

    const run = (): void => {
      if (signal.aborted) return;
      if (running) {
        again = true;
        return;
      }
      running = sync()
        .then(
          () => {
            lastError = undefined;
          },
          (err: unknown) => {
            const message = err instanceof Error ? err.message : String(err);
            if (message !== lastError) log(message);
            lastError = message;
          },
        )
        .finally(() => {
          running = undefined;
          if (again) {
            again = false;
            run();
          }
        });
    };
    const soon = (): void => {
      settle ??= setTimeout(() => {
        settle = undefined;
        run();
      }, SETTLE_MS);
    };

    let watcher: FSWatcher | undefined;
    try {
      watcher = watch(dir, soon);
      watcher.on("error", (err) => log(`watching ${dir} stopped (${err.message}); polling every ${POLL_MS} ms`));
    } catch (err) {
      log(`cannot watch ${dir} (${(err as Error).message}); polling every ${POLL_MS} ms`);
    }
    const poll = setInterval(run, POLL_MS);
    run();

    const stop = (): void => {
      watcher?.close();
      clearInterval(poll);
      clearTimeout(settle);
      // Let a write in progress finish its rename, so no temporary file is left behind.
      void (running ?? Promise.resolve()).then(() => resolve());
    };
    if (signal.aborted) stop();
    else signal.addEventListener("abort", stop, { once: true });
  });
}
