import { describe, expect, it } from 'vitest';
import { TEST_PASSWORD_COST } from '../../test/server.js';
import { DUMMY_PASSWORD_HASH, hashPassword, PASSWORD_COST, verifyPassword } from './secrets.js';

describe('password hashes', () => {
  it('are made at scrypt N=2^15, r=8, p=1 unless a cost is passed, and name their cost', async () => {
    expect(PASSWORD_COST).toEqual({ N: 32768, r: 8, p: 1 });
    expect(() => Object.assign(PASSWORD_COST, { N: 16 })).toThrow(TypeError);
    const stored = await hashPassword('correct horse battery');
    expect(stored).toMatch(/^scrypt\$32768\$8\$1\$[\w-]{22}\$[\w-]{43}$/);
    expect(await verifyPassword('correct horse battery', stored)).toBe(true);
    expect(DUMMY_PASSWORD_HASH.split('$').slice(0, 4)).toEqual(['scrypt', '32768', '8', '1']);
  });

  it("made at the test harness's cheap cost verify, and refuse a wrong password", async () => {
    const cheap = await hashPassword('correct horse battery', TEST_PASSWORD_COST);
    expect(cheap).toMatch(/^scrypt\$16\$8\$1\$/);
    expect(await verifyPassword('correct horse battery', cheap)).toBe(true);
    expect(await verifyPassword('correct horse batterY', cheap)).toBe(false);
  });

  it('stored before the cost became a parameter still verify', async () => {
    const stored = 'scrypt$32768$8$1$IKmMtUYcqpnZDVsTiYKzIQ$9FKAddyqhpw6A_Ki_rJMG48Rc-3c3ZqlwT3EGHIcGT4';
    expect(await verifyPassword('correct horse battery', stored)).toBe(true);
    expect(await verifyPassword('correct horse', stored)).toBe(false);
  });
});
