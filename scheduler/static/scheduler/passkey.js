// The two-factor page: once the browser has registered a passkey or security key
// (django-otp-webauthn's script says so with this event), go on to where the person was going.
// The page's "next" was checked by the server (scheduler.security._next_url).
document.addEventListener("otp_webauthn.register_complete", () => {
  const next = document.querySelector("#passkey-setup input[name='next']");
  window.location.assign(next && next.value ? next.value : "/admin/");
});
