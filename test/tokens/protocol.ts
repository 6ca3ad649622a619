/** What the token tests share with their project's bindings (vitest.config.ts). */
export const TOKEN_SECRET = "the-keyed-tests-token-secret-0123456789";
