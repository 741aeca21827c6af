import crypto from 'node:crypto';
import { AppError } from '../errors.js';

const ACCOUNT_ALPHABET = 'abcdefghijklmnopqrstuvwxyz0123456789';
// No look-alikes (0/O, 1/l/I): the password is typed by people.
const PASSWORD_ALPHABET = 'ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz23456789';

function randomString(alphabet: string, length: number): string {
  return Array.from({ length }, () => alphabet[crypto.randomInt(alphabet.length)]).join('');
}

/** Account names come from here only, never from user input: `rent_` and 8 random characters. */
export function generateAccountName(): string {
  return `rent_${randomString(ACCOUNT_ALPHABET, 8)}`;
}

export function generatePassword(): string {
  return randomString(PASSWORD_ALPHABET, 20);
}

/** A password a renter chose: long enough, varied enough, printable, not their user name. */
export function checkPasswordStrength(password: string, username: string): void {
  const problems: string[] = [];
  if (password.length < 12) problems.push('at least 12 characters');
  if (password.length > 128) problems.push('at most 128 characters');
  if (/[^\x20-\x7e]/.test(password)) problems.push('printable ASCII characters only');
  const classes = [/[a-z]/, /[A-Z]/, /[0-9]/, /[^A-Za-z0-9]/].filter((pattern) => pattern.test(password)).length;
  if (classes < 3 && password.length < 20) problems.push('three of: lower case, upper case, digits, symbols (or 20 characters or more)');
  if (password.toLowerCase().includes(username.toLowerCase())) problems.push('not containing your user name');
  if (problems.length > 0) {
    throw new AppError('WEAK_PASSWORD', `ssh_password is too weak; it needs ${problems.join('; ')}. Leave it out to get a generated one.`);
  }
}
