#!/usr/bin/env node
// `npx runs ...` from the project: runs cli/runs.ts through tsx.
import { register } from "tsx/esm/api";

register();
await import("./runs.ts");
