import { workerSetup, type WorkerSetupOptions } from '../src/workers/worker-install.js';
import { authorizeProvisioningKey } from '../src/workers/worker-setup.js';

// The worker-side entry points, for tests in a private namespace that must not depend on src/cli.ts:
//   worker-entry.ts setup '<WorkerSetupOptions as JSON>'         what `dispatcher worker-setup` runs
//   worker-entry.ts authorize <file> <public key> <command>       what the agent does at registration
const [verb, ...args] = process.argv.slice(2);
if (verb === 'setup') {
  process.exitCode = await workerSetup(JSON.parse(args[0] ?? '{}') as Partial<WorkerSetupOptions>);
} else if (verb === 'authorize') {
  try {
    await authorizeProvisioningKey(args[0] as string, args[1] as string, args[2] as string);
  } catch (error) {
    process.stderr.write(`${(error as Error).message}\n`);
    process.exitCode = 1;
  }
} else {
  throw new Error(`unknown verb ${verb}`);
}
