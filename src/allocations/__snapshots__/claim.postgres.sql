-- allocate;

begin;

update "nodes" set "free_bytes" = $1, "free_reported_at" = $2 where "id" = $3 returning "id", "free_bytes", "free_reported_at", "reserved_bytes", "bandwidth_bps", "strikes", "draining", "tags", "window_from", "window_until";

with "known" as (select "id", "name", "url", "size_bytes", "priority", "holders", "first_seen_at", "sha256", "replicas_target", "source_errors" from "assets" where state = 'pending' and holders < replicas_target and "priority" >= $1 and "priority" <= $2 and not exists (select 1 as "one" from "allocations" where "allocations"."asset_id" = "assets"."id" and "allocations"."node_id" = $3 and "allocations"."state" in ('active', 'completed')) and ("source_errors" = $4 or not exists (select 1 as "one" from "allocations" where "allocations"."asset_id" = "assets"."id" and "allocations"."node_id" = $5 and end_reason like 'source_gone:%')) and size_bytes is not null and "size_bytes" <= $6 order by "priority" desc, "holders" asc, "first_seen_at" asc, "id" asc limit $7 for update of "assets" skip locked), "unknown" as (select "id", "name", "url", "size_bytes", "priority", "holders", "first_seen_at", "sha256", "replicas_target", "source_errors" from "assets" where state = 'pending' and holders < replicas_target and "priority" >= $8 and "priority" <= $9 and not exists (select 1 as "one" from "allocations" where "allocations"."asset_id" = "assets"."id" and "allocations"."node_id" = $10 and "allocations"."state" in ('active', 'completed')) and ("source_errors" = $11 or not exists (select 1 as "one" from "allocations" where "allocations"."asset_id" = "assets"."id" and "allocations"."node_id" = $12 and end_reason like 'source_gone:%')) and size_bytes is null order by "priority" desc, "holders" asc, "first_seen_at" asc, "id" asc limit $13 for update of "assets" skip locked) select * from "known" union all select * from "unknown";


    with granted as (
      insert into allocations (asset_id, node_id, state, reserved_bytes, created_at, expires_at, verified)
      select g.asset_id, g.node_id, 'active', g.reserved_bytes, $1::bigint, g.expires_at, 0
      from unnest($2::text[], $3::bigint[],
                  $4::bigint[], $5::bigint[])
        with ordinality as g(asset_id, node_id, reserved_bytes, expires_at, position)
      order by g.position
      returning id, asset_id, node_id
    ), counted as (
      update assets set holders = holders + c.grants
      from (select asset_id, count(*)::int as grants from granted group by asset_id) as c
      where assets.id = c.asset_id
    ), logged as (
      insert into events (at, actor, kind, subject_type, subject_id, data)
      select $6::bigint, e.actor, $7, 'allocation', granted.id::text, e.data
      from unnest($8::text[], $9::bigint[],
                  $10::text[], $11::text[])
        with ordinality as e(asset_id, node_id, actor, data, position)
      join granted using (asset_id, node_id)
      order by e.position
    )
    select id, asset_id, node_id from granted;

commit;

begin;

update "nodes" set "free_bytes" = $1, "free_reported_at" = $2 where "id" = $3 returning "id", "free_bytes", "free_reported_at", "reserved_bytes", "bandwidth_bps", "strikes", "draining", "tags", "window_from", "window_until";

select "id", "name", "url", "size_bytes", "priority", "holders", "first_seen_at", "sha256", "replicas_target", "source_errors" from "assets" where state = 'pending' and holders < replicas_target and "priority" >= $1 and "priority" <= $2 and not exists (select 1 as "one" from "allocations" where "allocations"."asset_id" = "assets"."id" and "allocations"."node_id" = $3 and "allocations"."state" in ('active', 'completed')) and ("source_errors" = $4 or not exists (select 1 as "one" from "allocations" where "allocations"."asset_id" = "assets"."id" and "allocations"."node_id" = $5 and end_reason like 'source_gone:%')) and size_bytes is not null and "size_bytes" <= $6 order by "priority" desc, "holders" asc, "first_seen_at" asc, "id" asc limit $7;

commit;

-- release;

begin;

update "allocations" set "state" = $1, "ended_at" = $2, "end_reason" = $3 where "asset_id" = $4 and "node_id" = $5 and "state" = $6 returning "id";

update "assets" set "holders" = "holders" - $1 where "id" = $2;

insert into "events" ("at", "actor", "kind", "subject_type", "subject_id", "data") values ($1, $2, $3, $4, $5, $6);

commit;

-- complete;

begin;

update "assets" set "holders" = "holders" where "id" = $1 returning "sha256", "size_bytes", "replicas_target", "copies", "state";

update "allocations" set "state" = $1, "ended_at" = $2, "end_reason" = $3, "sha256" = $4, "bytes" = $5, "uri" = $6, "verified" = $7 where "asset_id" = $8 and "node_id" = $9 and "state" = $10 returning "id";

select "id", "node_id", "sha256" from "allocations" where "asset_id" = $1 and "state" = $2;

update "allocations" set "verified" = $1 where "asset_id" = $2 and "state" = $3 and "sha256" = $4;

update "assets" set "copies" = (select count(*) from allocations where allocations.asset_id = assets.id and allocations.state = 'completed' and allocations.verified = 1), "holders" = (select count(*) from allocations where allocations.asset_id = assets.id and allocations.state = 'completed' and allocations.verified = 1) + (select count(*) from allocations where allocations.asset_id = assets.id and allocations.state = 'active'), "state" = case when (select count(*) from allocations where allocations.asset_id = assets.id and allocations.state = 'completed' and allocations.verified = 1) >= replicas_target then 'rescued' when state = 'rescued' then 'pending' else state end, "size_bytes" = coalesce(size_bytes, (select max(bytes) from allocations where allocations.asset_id = assets.id and allocations.state = 'completed' and allocations.verified = 1)) where "id" = $1 returning "state", "copies", "replicas_target";

update "nodes" set "strikes" = case when strikes + $1 < 0 then 0 else strikes + $2 end where "id" in ($3);

insert into "events" ("at", "actor", "kind", "subject_type", "subject_id", "data") values ($1, $2, $3, $4, $5, $6), ($7, $8, $9, $10, $11, $12);

commit;

-- expire;

begin;

update "allocations" set "state" = $1, "ended_at" = $2, "end_reason" = $3 where "id" in (select "id" from "allocations" where "state" = $4 and "expires_at" <= $5 order by "expires_at" limit $6) and "state" = $7 returning "id", "asset_id", "node_id", "expires_at";

commit;
