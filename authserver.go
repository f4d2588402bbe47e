package main

import (
	"encoding/json"
	"errors"
	"net/http"
	"slices"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/mcp-oauth-proxy/mcp-oauth-proxy/broker"
	"github.com/mcp-oauth-proxy/mcp-oauth-proxy/gate"
	"github.com/mcp-oauth-proxy/mcp-oauth-proxy/provider"
	"github.com/mcp-oauth-proxy/mcp-oauth-proxy/wellknown"
)

// Broker mode's rate limits, per minute with a burst of the same size. A
// person's client makes a handful of requests per login and one per
// refresh; hosted clients (claude.ai) send everyone's from a few addresses,
// hence the larger budget per IP.
const (
	brokerPerIPPerMinute     = 120 // authorization, consent, token and revocation requests of one client IP
	brokerPerClientPerMinute = 60  // token and revocation requests of one confidential client (public ones: per IP only)
)

// fallback is what broker mode's gate does with a token that is not the
// broker's: hand it to the provider (accept), whose audiences are then
// audiences, or refuse it; why says so for the log.
type fallback struct {
	accept    bool
	audiences []string
	why       string
	warn      bool // why is a warning: OIDC_AUDIENCE named the gateway's own client id
}

// providerFallback decides whether broker mode also accepts the
// provider's own access tokens (so machine clients using
// client_credentials at the provider keep working). Only with
// ACCEPT_PROVIDER_TOKENS (the default) and an OIDC_AUDIENCE that is not
// the gateway's own client id: the provider's ID tokens for that client
// carry it as aud, and must never pass as bearer tokens. An OIDC_AUDIENCE
// that lists the client id among others keeps the others.
func providerFallback(cfg *Config) fallback {
	clientID := cfg.Broker.ClientID
	auds := slices.DeleteFunc(slices.Clone(cfg.Provider.Audiences), func(a string) bool { return a == clientID })
	dropped := len(auds) < len(cfg.Provider.Audiences)
	switch {
	case !cfg.AcceptProviderTokens:
		return fallback{why: "ACCEPT_PROVIDER_TOKENS=false: only the gateway's own access tokens are accepted"}
	case len(auds) == 0 && dropped:
		return fallback{warn: true, why: "OIDC_AUDIENCE is the gateway's own client id (OIDC_CLIENT_ID), so the provider's tokens are not accepted: its ID tokens carry that audience and must never pass as access tokens"}
	case len(auds) == 0:
		return fallback{why: "no OIDC_AUDIENCE: only the gateway's own access tokens are accepted"}
	case dropped:
		return fallback{accept: true, audiences: auds, warn: true, why: "the provider's access tokens for OIDC_AUDIENCE are accepted too, except for the audience that is the gateway's own client id (OIDC_CLIENT_ID): its ID tokens carry it"}
	}
	return fallback{accept: true, audiences: auds, why: "the provider's access tokens for OIDC_AUDIENCE are accepted too"}
}

// newBroker builds broker mode's authorization server. The settings it
// shares with the other parts come from theirs; its issuer is exactly the
// authorization_servers entry of the protected-resource metadata. Its
// used codes, rotated refresh tokens and revocations, and its limits, are
// st's: this process's memory, or the Redis replicas share. The gate's
// admission checks revocations (in the same round trip as the subject's
// rate limit), so the broker's Verify leaves that to it.
func newBroker(cfg *Config, st *state, wk *wellknown.Server, prov *provider.Provider, allow *gate.AllowList, logger hclog.Logger) (*broker.Broker, error) {
	ipLimits, err1 := st.newLimiter("broker-ip", brokerPerIPPerMinute)
	clientLimits, err2 := st.newLimiter("broker-client", brokerPerClientPerMinute)
	registerLimits, err3 := st.newLimiter("broker-register", wellknown.DefaultRegisterPerIPPerMinute)
	if err := errors.Join(err1, err2, err3); err != nil {
		return nil, err
	}
	bc := cfg.Broker
	// The scopes MCP_POLICY asks for may be granted (step-up), and only by
	// BROKER_SCOPE_GRANTS: without a rule for one, nobody gets it. Without
	// a policy every requested scope that is supported is granted.
	if pol := cfg.Gate.Policy; pol != nil {
		bc.Scopes = appendMissing(bc.Scopes, pol.Scopes())
		bc.GrantScopes = cfg.ScopeGrants.Hook(pol.Scopes())
		for _, sc := range pol.Scopes() {
			if !slices.Contains(cfg.ScopeGrants.Scopes(), sc) {
				logger.Warn("MCP_POLICY asks for a scope that BROKER_SCOPE_GRANTS grants nobody; calls that need it will always be refused", "scope", sc)
			}
		}
	}
	bc.CallerChecksRevocation = true
	bc.Issuer = wk.Origin()
	bc.ResourceURL = cfg.WellKnown.ResourceURL
	bc.GroupsClaim = cfg.Provider.GroupsClaim
	bc.RedirectURIs = cfg.WellKnown.RedirectURIs
	bc.RedirectSchemes = cfg.WellKnown.RedirectSchemes
	bc.ClockSkew = cfg.Provider.ClockSkew
	bc.Upstream = prov
	bc.Allow = allow.Allows
	bc.Store = st.values
	bc.IPLimiter, bc.ClientLimiter, bc.RegisterLimiter = ipLimits, clientLimits, registerLimits
	bc.ClientIP = gate.ClientKey(cfg.Gate.TrustedProxies)
	bc.HTTPClient = &http.Client{Timeout: 10 * time.Second}
	bc.Logger = logger.Named("broker")
	if bc.Secret == nil && !cfg.dev {
		logger.Warn("BROKER_SECRET is not set: the broker's keys are random, so its registrations, codes and tokens " +
			"will not survive a restart and every user must log in again; set BROKER_SECRET (openssl rand -base64 32)")
	}
	return broker.New(bc)
}

// advice is what the gateway says about the provider's metadata once it
// is first known: a warning logged once each, for settings that cannot
// work with this provider.
//
//   - facade mode (iss): a provider whose metadata says
//     authorization_response_iss_parameter_supported sends RFC 9207's iss
//     with its own issuer, which facade mode's rewritten issuer does not
//     match, so MCP clients of the 2026-07-28 revision reject the login at
//     its last step. /readyz says it too (a part that is always ready).
//   - broker mode (groups): the allow-list, MCP_POLICY or
//     BROKER_SCOPE_GRANTS name groups, and the provider lists a "groups"
//     scope that OIDC_SCOPES does not ask for: providers that list one
//     (oidc-provider, Okta, ...) release the groups claim only for it, so
//     nobody would be in any group.
type advice struct {
	md     wellknown.Metadata
	log    hclog.Logger
	iss    bool // facade mode: warn of iss
	groups bool // broker mode: groups matter and OIDC_SCOPES lacks "groups"
	warned atomic.Bool
}

const issWarning = "facade mode with a provider that sends RFC 9207 iss: MCP clients following the 2026-07-28 " +
	"specification will reject the login (the issuer they see is the gateway's); use AUTH_SERVER_MODE=broker (docs/broker.md)"

const groupsWarning = "groups are named (ALLOW_GROUPS, MCP_POLICY or BROKER_SCOPE_GRANTS) and the provider lists a \"groups\" " +
	"scope that OIDC_SCOPES does not ask for: such providers release the groups claim only for that scope, so nobody " +
	"would be in any group; add groups to OIDC_SCOPES"

// newAdvice returns the advice cfg calls for, or nil when there is none to
// give.
func newAdvice(cfg *Config, log hclog.Logger) *advice {
	a := &advice{log: log, iss: cfg.WellKnown.Mode == wellknown.ModeFacade}
	if cfg.BrokerMode() && !slices.Contains(cfg.Broker.UpstreamScopes, "groups") {
		a.groups = len(cfg.Gate.AllowGroups) > 0 || cfg.Gate.Policy.NamesGroups() || cfg.ScopeGrants.NamesGroups()
	}
	if !a.iss && !a.groups {
		return nil
	}
	return a
}

// flag reads a boolean member of the provider's metadata; false when the
// metadata is not known yet.
func (a *advice) flag(name string) bool {
	m, err := a.md.Metadata()
	if err != nil {
		return false
	}
	var on bool
	return json.Unmarshal(m[name], &on) == nil && on
}

// listsGroupsScope reports whether the provider's scopes_supported has
// "groups".
func (a *advice) listsGroupsScope() bool {
	m, err := a.md.Metadata()
	if err != nil {
		return false
	}
	var scopes []string
	return json.Unmarshal(m["scopes_supported"], &scopes) == nil && slices.Contains(scopes, "groups")
}

// fetched is called after each of the provider's fetches; the first one
// after the metadata is known decides.
func (a *advice) fetched() {
	if a.warned.Load() {
		return
	}
	if _, err := a.md.Metadata(); err != nil {
		return
	}
	if !a.warned.CompareAndSwap(false, true) {
		return
	}
	if a.iss && a.flag("authorization_response_iss_parameter_supported") {
		a.log.Warn(issWarning)
	}
	if a.groups && a.listsGroupsScope() {
		a.log.Warn(groupsWarning)
	}
}

// Ready is /readyz's part: always ready, with facade mode's warning as its
// detail.
func (a *advice) Ready() (bool, string) {
	if a.iss && a.flag("authorization_response_iss_parameter_supported") {
		return true, issWarning
	}
	return true, ""
}
