// The agent's composition root. It imports nothing of the server (no database driver, no Fastify),
// so a rescue node installs without a C++ toolchain: test/agent-packaging.test.ts checks that.
import { loadAgentConfig, type AgentFlags } from './agent.config.js';
import { runAgent } from './agent.js';
import { createProgress } from './progress.js';
import { RegistrationRefused } from './registration.js';

/** `dispatcher agent`: runs until SIGINT/SIGTERM, gives back unfinished work, exits 0. */
export async function agent(flags: AgentFlags): Promise<void> {
  let config;
  try {
    config = loadAgentConfig(flags, process.env);
  } catch (error) {
    process.stderr.write(`${(error as Error).message}\n`);
    process.exit(1);
  }
  const progress = createProgress(process.stdout);
  const controller = new AbortController();
  const stop = (signal: string) => {
    progress.log(`${signal} received: finishing nothing new`);
    controller.abort();
    // A second signal, or 30 s without finishing, ends the process regardless.
    process.once('SIGINT', () => process.exit(1));
    process.once('SIGTERM', () => process.exit(1));
    setTimeout(() => process.exit(1), 30_000).unref();
  };
  process.once('SIGINT', () => stop('SIGINT'));
  process.once('SIGTERM', () => stop('SIGTERM'));
  try {
    await runAgent(config, progress, controller.signal);
  } catch (error) {
    // A refusal says what to set; anything else is a fault worth its stack.
    process.stderr.write(`${error instanceof RegistrationRefused ? error.message : ((error as Error).stack ?? String(error))}\n`);
    process.exit(1);
  }
  progress.log('stopped');
  process.exit(0);
}
