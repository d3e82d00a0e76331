// The API as the console calls it: one typed client per service (generated types, see
// scripts/gen-api.mjs), all through the gateway the console is served from, with the view
// token of the page as bearer.
import createClient, { type Middleware } from 'openapi-fetch';
import type { paths as BillingPaths } from './schema/billing';
import type { paths as DispatcherPaths } from './schema/dispatcher';
import type { paths as SchedulingPaths } from './schema/scheduling';
import type { paths as SessionsPaths, components as SessionsComponents } from './schema/sessions';
import type { paths as TokenPaths } from './schema/token';

export type TimelineEntry = SessionsComponents['schemas']['TimelineEntry'];
export type SessionSummary = SessionsComponents['schemas']['SessionSummary'];

let bearer = '';

/** The credential every call sends from now on (a view token; an API key only to exchange). */
export function setCredential(token: string): void {
  bearer = token;
}

const auth: Middleware = {
  onRequest({ request }) {
    if (bearer) request.headers.set('Authorization', `Bearer ${bearer}`);
    return request;
  },
};

function client<Paths extends {}>() {
  const made = createClient<Paths>({ baseUrl: window.location.origin });
  made.use(auth);
  return made;
}

export const api = {
  token: client<TokenPaths>(),
  agents: client<DispatcherPaths>(),
  scheduling: client<SchedulingPaths>(),
  billing: client<BillingPaths>(),
  sessions: client<SessionsPaths>(),
};

/** An error answer of the API, with its stable code (`{"error": {"code", "message"}}`). */
export class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
  ) {
    super(message);
  }
}

/** The data of a call, or an ApiError with the answer's code and message. */
export async function ok<T>(
  call: Promise<{ data?: T; error?: unknown; response: Response }>,
): Promise<T> {
  const { data, error, response } = await call;
  if (response.ok && data !== undefined) return data;
  const body = (error ?? {}) as { error?: { code?: string; message?: string } };
  throw new ApiError(
    response.status,
    body.error?.code ?? `http_${response.status}`,
    body.error?.message ?? response.statusText,
  );
}
