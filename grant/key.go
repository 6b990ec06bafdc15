package grant

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"slices"
)

// MinSecretLen is the shortest HMAC secret accepted, in bytes: 256 bits,
// the size of HS256's hash. A shorter secret can be guessed offline from
// any one grant.
const MinSecretLen = 32

// Key is one key grants may be signed with: an HMAC secret or a public key.
type Key struct {
	id      string   // the kid a grant names it by
	key     any      // what jwt's Verify takes: []byte or a public key
	methods []string // the JWT algorithms that fit it
	kind    string   // for errors: "HMAC secret", "RSA public key", …
}

// ID is the key's kid: the name it was given, else its RFC 7638 JWK
// thumbprint.
func (k Key) ID() string { return k.id }

// String describes the key for logs and errors, without its material.
func (k Key) String() string { return fmt.Sprintf("%s %q", k.kind, k.id) }

// fits reports whether a grant signed with alg can be checked with k.
func (k Key) fits(alg string) bool { return slices.Contains(k.methods, alg) }

// Secret is an HMAC key (HS256, HS384, HS512) of at least MinSecretLen
// bytes. name is its kid; "" names it by its thumbprint.
func Secret(secret []byte, name string) (Key, error) {
	if len(secret) < MinSecretLen {
		return Key{}, fmt.Errorf("HMAC secret is %d bytes, want at least %d", len(secret), MinSecretLen)
	}
	k := Key{key: slices.Clone(secret), methods: []string{"HS256", "HS384", "HS512"}, kind: "HMAC secret"}
	k.id = name
	if k.id == "" {
		k.id = thumbprint(`{"k":"` + b64(secret) + `","kty":"oct"}`)
	}
	return k, nil
}

// PublicKey reads one PEM public key (PKIX "PUBLIC KEY", or PKCS #1 "RSA
// PUBLIC KEY"), or the public key of a PEM certificate: RSA (RS256/384/512,
// PS256/384/512, at least 2048 bits), ECDSA (ES256 on P-256, ES384 on P-384,
// ES512 on P-521) or Ed25519 (EdDSA). A private key is refused: Caddy needs
// only the public half. name is its kid; "" names it by its thumbprint.
func PublicKey(data []byte, name string) (Key, error) {
	block, rest := pem.Decode(data)
	if block == nil {
		return Key{}, errors.New("no PEM block found")
	}
	if b, _ := pem.Decode(rest); b != nil {
		return Key{}, errors.New("more than one PEM block: give one key per file")
	}
	var pub any
	var err error
	switch block.Type {
	case "PUBLIC KEY":
		pub, err = x509.ParsePKIXPublicKey(block.Bytes)
	case "RSA PUBLIC KEY":
		pub, err = x509.ParsePKCS1PublicKey(block.Bytes)
	case "CERTIFICATE":
		var cert *x509.Certificate
		if cert, err = x509.ParseCertificate(block.Bytes); err == nil {
			pub = cert.PublicKey
		}
	case "PRIVATE KEY", "RSA PRIVATE KEY", "EC PRIVATE KEY", "ENCRYPTED PRIVATE KEY", "OPENSSH PRIVATE KEY":
		return Key{}, fmt.Errorf("PEM block is a %s: give the public key (openssl pkey -pubout), Caddy needs only that", block.Type)
	default:
		return Key{}, fmt.Errorf("PEM block is a %q, not a public key", block.Type)
	}
	if err != nil {
		return Key{}, fmt.Errorf("parsing %s: %v", block.Type, err)
	}
	k, err := publicKey(pub)
	if err != nil {
		return Key{}, err
	}
	if name != "" {
		k.id = name
	}
	return k, nil
}

func publicKey(pub any) (Key, error) {
	switch p := pub.(type) {
	case *rsa.PublicKey:
		if p.N.BitLen() < 2048 {
			return Key{}, fmt.Errorf("RSA key has %d bits, want at least 2048", p.N.BitLen())
		}
		return Key{
			key: p, kind: "RSA public key",
			methods: []string{"RS256", "RS384", "RS512", "PS256", "PS384", "PS512"},
			id:      thumbprint(`{"e":"` + b64(big.NewInt(int64(p.E)).Bytes()) + `","kty":"RSA","n":"` + b64(p.N.Bytes()) + `"}`),
		}, nil
	case *ecdsa.PublicKey:
		var alg, crv string
		switch p.Curve {
		case elliptic.P256():
			alg, crv = "ES256", "P-256"
		case elliptic.P384():
			alg, crv = "ES384", "P-384"
		case elliptic.P521():
			alg, crv = "ES512", "P-521"
		default:
			return Key{}, fmt.Errorf("ECDSA curve %s is not one JWT uses (P-256, P-384, P-521)", p.Curve.Params().Name)
		}
		// RFC 7518 6.2.1.2: coordinates padded to the curve's size.
		size := (p.Curve.Params().BitSize + 7) / 8
		x, y := make([]byte, size), make([]byte, size)
		p.X.FillBytes(x)
		p.Y.FillBytes(y)
		return Key{
			key: p, kind: "ECDSA public key", methods: []string{alg},
			id: thumbprint(`{"crv":"` + crv + `","kty":"EC","x":"` + b64(x) + `","y":"` + b64(y) + `"}`),
		}, nil
	case ed25519.PublicKey:
		return Key{
			key: p, kind: "Ed25519 public key", methods: []string{"EdDSA"},
			id: thumbprint(`{"crv":"Ed25519","kty":"OKP","x":"` + b64(p) + `"}`),
		}, nil
	}
	return Key{}, fmt.Errorf("%T keys cannot sign JWTs here (RSA, ECDSA or Ed25519 only)", pub)
}

// thumbprint is RFC 7638's: SHA-256 of the key's required members in
// lexicographic order, without whitespace, base64url without padding.
func thumbprint(canonicalJWK string) string {
	sum := sha256.Sum256([]byte(canonicalJWK))
	return b64(sum[:])
}

func b64(b []byte) string { return base64.RawURLEncoding.EncodeToString(b) }
