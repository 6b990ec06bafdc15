package grip

import (
	"errors"
	"fmt"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// SigHeader is the request header that carries the proxy's signature to
// the app.
const SigHeader = "Grip-Sig"

// DefaultIssuer is the "iss" claim Pushpin signs with (its sig_iss setting).
const DefaultIssuer = "pushpin"

// SigLifetime is how far ahead a Grip-Sig's "exp" is.
const SigLifetime = time.Hour

// Sign makes a Grip-Sig as Pushpin makes it (proxy/proxyutil.cpp,
// make_token): a JWT signed HS256 with key, claims {"iss": "pushpin",
// "exp": now + 1 h} in whole seconds and nothing else.
func Sign(key []byte, now time.Time) (string, error) {
	return SignIssuer(DefaultIssuer, key, now)
}

// SignIssuer is Sign with another issuer (Pushpin's sig_iss).
func SignIssuer(iss string, key []byte, now time.Time) (string, error) {
	if len(key) == 0 {
		// Pushpin sends no Grip-Sig without a key.
		return "", errors.New("grip: empty signing key")
	}
	claims := jwt.MapClaims{"iss": iss, "exp": now.Add(SigLifetime).Unix()}
	return jwt.NewWithClaims(jwt.SigningMethodHS256, claims).SignedString(key)
}

// Verify checks a Grip-Sig (or any GRIP JWT) as Pushpin checks one from an
// upstream proxy (proxy/proxyutil.cpp, validate_token): an HS256 signature
// by key, and an "exp" claim in the future. The issuer is not checked.
func Verify(token string, key []byte) error {
	return VerifyAt(token, key, time.Now())
}

// VerifyAt is Verify at the time now.
func VerifyAt(token string, key []byte, now time.Time) error {
	if len(key) == 0 {
		return errors.New("grip: empty key")
	}
	_, err := jwt.Parse(token, func(*jwt.Token) (any, error) { return key, nil },
		jwt.WithValidMethods([]string{jwt.SigningMethodHS256.Alg()}),
		jwt.WithExpirationRequired(),
		jwt.WithTimeFunc(func() time.Time { return now }),
	)
	if err != nil {
		return fmt.Errorf("grip: invalid signature: %w", err)
	}
	return nil
}
