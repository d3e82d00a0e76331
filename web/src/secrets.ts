// Tokens travel in the address's fragment (#...), which browsers never send to a server, so no
// server log holds them. The page reads them once, keeps them for this tab only
// (sessionStorage: a reload still works), and clears them from the address bar.
export function fragment(scope: string): URLSearchParams {
  const key = `mediai:${scope}`;
  const hash = window.location.hash.slice(1);
  if (hash) {
    sessionStorage.setItem(key, hash);
    history.replaceState(null, '', window.location.pathname + window.location.search);
  }
  return new URLSearchParams(sessionStorage.getItem(key) ?? '');
}

export function remember(scope: string, params: Record<string, string>): void {
  sessionStorage.setItem(`mediai:${scope}`, new URLSearchParams(params).toString());
}

export function forget(scope: string): void {
  sessionStorage.removeItem(`mediai:${scope}`);
}
