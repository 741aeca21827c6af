import { executeWorkerCommand, systemAccounts, type WorkerAccounts } from './worker-commands.js';

/**
 * `dispatcher worker-exec`: what sshd runs when the control plane connects with its provisioning
 * key. The requested line is parsed and validated here again; nothing else can be run with that key.
 */
export async function workerExec(
  line: string | undefined,
  accounts: WorkerAccounts = systemAccounts({ sudo: process.getuid?.() !== 0 }),
  write: (text: string) => void = (text) => process.stderr.write(text),
): Promise<number> {
  if (!line) {
    write("worker-exec: no command (SSH_ORIGINAL_COMMAND is empty); this key only runs Dispatcher's provisioning commands\n");
    return 2;
  }
  try {
    await executeWorkerCommand(line, accounts);
    return 0;
  } catch (error) {
    write(`worker-exec: ${(error as Error).message}\n`);
    return 1;
  }
}
