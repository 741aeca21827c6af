import type { FastifyRequest } from 'fastify';
import { AppError } from '../errors.js';
import type { Renter } from '../rentals/rentals.service.js';
import { actorOf, isAdmin, principalOf } from './auth.js';

/** The user behind a request, as rentals and schedules act for them; a node's token is refused. */
export function renterOf(request: FastifyRequest): Renter {
  const principal = principalOf(request);
  if (principal.kind !== 'user') throw new AppError('FORBIDDEN', 'Rentals need a user token from POST /auth/login.');
  return { userId: principal.userId, username: principal.username, admin: isAdmin(principal), actor: actorOf(principal) };
}
