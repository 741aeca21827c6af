# syntax=docker/dockerfile:1
# Two images from one file:
#   the control plane: `docker build -t dispatcher .` (the last stage), then see compose.yaml;
#   a rescue node's agent: `docker build --target agent -t dispatcher-agent .`, built without a compiler.
# All stages use the same base image, so the native SQLite driver built in `build` runs in `runtime`.
ARG NODE_IMAGE=node:22-bookworm-slim

FROM ${NODE_IMAGE} AS agent-build
WORKDIR /app
COPY package.json package-lock.json tsconfig.json tsconfig.build.json ./
COPY src ./src
# The agent never loads the database drivers, so no install script runs: that skips better-sqlite3's
# node-gyp build (no python3, make or g++ here) and the `prepare` build, done explicitly instead.
RUN --mount=type=cache,target=/root/.npm npm ci --ignore-scripts \
 && npm run build \
 && npm prune --omit=dev --ignore-scripts

FROM ${NODE_IMAGE} AS agent
ENV NODE_ENV=production \
    DATA_DIRECTORY=/data
WORKDIR /app
# Owned by root and read-only to the agent: only /data is writable.
COPY --from=agent-build /app/package.json ./package.json
COPY --from=agent-build /app/node_modules ./node_modules
COPY --from=agent-build /app/dist ./dist
RUN mkdir -p /data && chown node:node /data
# The official image's unprivileged user (uid 1000).
USER node
# Copies, partial downloads and the node's identity (its token): keep the volume across upgrades.
VOLUME ["/data"]
# SIGTERM reaches node directly (exec form): the agent takes nothing new, gives its unfinished work
# back and exits within 30 s, so stop it with `docker stop -t 45` (Docker's default waits only 10 s).
STOPSIGNAL SIGTERM
ENTRYPOINT ["node", "dist/cli.js", "agent"]

FROM ${NODE_IMAGE} AS build
# better-sqlite3 compiles from source when no prebuilt binary fits.
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 make g++ \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /app
COPY package.json package-lock.json tsconfig.json tsconfig.build.json ./
COPY src ./src
# `npm ci` also builds (the `prepare` script: tsc into dist/); then the dev dependencies go.
RUN --mount=type=cache,target=/root/.npm npm ci && npm prune --omit=dev

# The last stage, so a plain `docker build .` (and compose.yaml) builds the control plane.
FROM ${NODE_IMAGE} AS runtime
ENV NODE_ENV=production \
    DATA_DIRECTORY=/data \
    PORT=8000
WORKDIR /app
# Owned by root and read-only to the service user: only /data is writable.
COPY --from=build /app/package.json ./package.json
COPY --from=build /app/node_modules ./node_modules
COPY --from=build /app/dist ./dist
RUN mkdir -p /data && chown node:node /data
# The official image's unprivileged user (uid 1000).
USER node
# The SQLite database lives here when DATABASE_URL is unset (one instance only).
VOLUME ["/data"]
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
  CMD ["node", "-e", "fetch('http://127.0.0.1:' + (process.env.PORT || 8000) + '/health').then((r) => process.exit(r.ok ? 0 : 1), () => process.exit(1))"]
# SIGTERM from `docker stop` reaches node directly (exec form): loops finish, then it exits.
ENTRYPOINT ["node", "dist/cli.js"]
CMD ["serve"]
