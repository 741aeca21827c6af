import fs from 'node:fs';
import path from 'node:path';
import { Copy, DockerfileParser, From, type Instruction } from 'dockerfile-ast';
import { validate } from 'dockerfile-utils';
import { describe, expect, it } from 'vitest';
import { root } from './cli-runner.js';

const text = fs.readFileSync(path.join(root, 'Dockerfile'), 'utf8');

interface Stage {
  name: string | null;
  instructions: Instruction[];
}

/** The build stages in order, each with its instructions from its FROM on. */
function readStages(): Stage[] {
  const stages: Stage[] = [];
  for (const instruction of DockerfileParser.parse(text).getInstructions()) {
    if (instruction instanceof From) stages.push({ name: instruction.getBuildStage(), instructions: [] });
    stages.at(-1)?.instructions.push(instruction);
  }
  return stages;
}

const stages = readStages();
const stageNamed = (name: string) => stages.find((stage) => stage.name === name);
const argumentsOf = (stage: Stage, keyword: string) =>
  stage.instructions.filter((instruction) => instruction.getKeyword() === keyword).map((instruction) => instruction.getArgumentsContent() ?? '');

/** `target` and every stage it copies from or builds on, as `docker build --target` builds them. */
function stagesBehind(target: string): Stage[] {
  const seen = new Map<string, Stage>();
  const visit = (name: string) => {
    const stage = stageNamed(name);
    if (!stage || seen.has(name)) return;
    seen.set(name, stage);
    for (const instruction of stage.instructions) {
      if (instruction instanceof From) visit(instruction.getImageName() ?? '');
      if (instruction instanceof Copy) visit(instruction.getFromFlag()?.getValue() ?? '');
    }
  };
  visit(target);
  return [...seen.values()];
}

describe('Dockerfile', () => {
  it('has no errors or warnings', () => {
    expect(validate(text)).toEqual([]);
  });

  it('builds the agent without a compiler: no install scripts, no toolchain', () => {
    const behind = stagesBehind('agent');
    expect(behind.map((stage) => stage.name)).toEqual(['agent', 'agent-build']);
    const runs = behind.flatMap((stage) => argumentsOf(stage, 'RUN'));
    for (const run of runs) expect(run).not.toMatch(/apt-get|apk |python3|\bmake\b|g\+\+|gcc|build-essential/);
    for (const install of runs.flatMap((run) => run.match(/npm (ci|install|prune)[^&]*/g) ?? [])) expect(install).toContain('--ignore-scripts');
  });

  it('runs the agent as the unprivileged node user, on /data, stopped by SIGTERM to node itself', () => {
    const agent = stageNamed('agent')!;
    expect(argumentsOf(agent, 'USER')).toEqual(['node']);
    expect(argumentsOf(agent, 'ENV').join(' ')).toContain('DATA_DIRECTORY=/data');
    expect(argumentsOf(agent, 'VOLUME')).toEqual(['["/data"]']);
    expect(argumentsOf(agent, 'STOPSIGNAL')).toEqual(['SIGTERM']);
    expect(argumentsOf(agent, 'ENTRYPOINT').map((entrypoint) => JSON.parse(entrypoint))).toEqual([['node', 'dist/cli.js', 'agent']]);
  });

  it('builds the control plane by default: the last stage serves', () => {
    const last = stages.at(-1)!;
    expect(last.name).toBe('runtime');
    expect(argumentsOf(last, 'ENTRYPOINT').map((entrypoint) => JSON.parse(entrypoint))).toEqual([['node', 'dist/cli.js']]);
    expect(argumentsOf(last, 'CMD').map((cmd) => JSON.parse(cmd))).toEqual([['serve']]);
  });
});
