import { Type } from '@sinclair/typebox';
import { Limit, Nullable } from '../http/schemas.js';

export const EventView = Type.Object({
  id: Type.Integer(),
  at: Type.String(),
  actor: Type.String({ description: 'user:<name>, node:<name>, enrollment or system.' }),
  kind: Type.String({ description: 'e.g. allocation.granted, asset.priority_changed, node.created.' }),
  subject_type: Type.String(),
  subject_id: Type.String(),
  data: Nullable(Type.Record(Type.String(), Type.Unknown())),
});

export const EventQuery = Type.Object(
  {
    kind: Type.Optional(Type.String({ maxLength: 64 })),
    subject_type: Type.Optional(Type.String({ maxLength: 64 })),
    subject_id: Type.Optional(Type.String({ maxLength: 512 })),
    cursor: Type.Optional(Type.Integer({ minimum: 1, description: 'next_cursor of the previous page.' })),
    limit: Limit(100, 1000),
  },
  { additionalProperties: false },
);
