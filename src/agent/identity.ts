import fs from 'node:fs/promises';
import path from 'node:path';

/** What a registered node keeps in DATA_DIRECTORY, so a restart does not register a new node. */
export interface Identity {
  api_endpoint: string;
  node_id: number;
  name: string;
  node_token: string;
}

const FILE = 'node-identity.json';

export async function readIdentity(dataDirectory: string): Promise<Identity | null> {
  try {
    return JSON.parse(await fs.readFile(path.join(dataDirectory, FILE), 'utf8')) as Identity;
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw new Error(`${path.join(dataDirectory, FILE)} is unreadable: ${(error as Error).message}`, { cause: error });
  }
}

/** Written with mode 0600: the node token is a credential. */
export async function writeIdentity(dataDirectory: string, identity: Identity): Promise<void> {
  const file = path.join(dataDirectory, FILE);
  await fs.writeFile(`${file}.tmp`, JSON.stringify(identity, null, 2), { mode: 0o600 });
  await fs.rename(`${file}.tmp`, file);
  await fs.chmod(file, 0o600);
}
