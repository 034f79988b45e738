# infergate's image: the admission webhook (`serve`) and the metrics adapter (`adapter`).
# Node 24 runs the TypeScript sources directly by type stripping (docs/decisions/001), so there is
# no build step: the image holds the production dependencies and the sources, and runs as non-root.
#   docker build -t infergate:dev .
FROM node:24-alpine AS dependencies
WORKDIR /app
COPY package.json package-lock.json ./
# Production dependencies only (the `node` devDependency and the toolchain stay out); none of them
# needs an install script.
RUN npm ci --omit=dev --ignore-scripts && npm cache clean --force

FROM node:24-alpine
WORKDIR /app
ENV NODE_ENV=production
COPY --from=dependencies /app/node_modules ./node_modules
COPY package.json ./
COPY bin ./bin
COPY src ./src
COPY webhooks ./webhooks
# src/policy/schema.ts validates Projects and InferencePolicies against the CRDs' own schemas.
COPY manifests/crds ./manifests/crds
# The official image's `node` user, by number so that Kubernetes can check runAsNonRoot. Files
# above belong to root and are read-only to it; the manifests also make the root filesystem read-only.
USER 1000:1000
EXPOSE 8443 6443
ENTRYPOINT ["node", "src/cli/main.ts"]
CMD ["serve"]
