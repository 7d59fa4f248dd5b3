// tokenserver: a Harbor-like token service for the lab's second registry (Go standard library only).
//
// Harbor itself and cesanta/docker_auth cannot be fetched here, so this plays Harbor's part
// of the Docker token flow (https://distribution.github.io/distribution/spec/auth/token/):
// the registry answers 401 with `Bearer realm=…,service=…,scope=…`, the client asks this
// server for a token with its user's Basic credentials, and gets an RS256 JWT granting the
// actions the user's project role allows. The JWT carries the signing certificate in `x5c`
// (accepted by distribution 2.8 and 3.x; a libtrust `kid`, what Harbor emits, only by 2.8).
//
// Projects, members and robot accounts follow Harbor's model: a robot `robot$<project>+<name>`
// has the permissions given to it on its own project; a member has its role's (guest: pull;
// developer, maintainer, projectAdmin: pull and push); a public project lets anyone pull.
// The user name is taken from Basic auth, never from the `account` parameter (form-decoding
// turns the `+` of a robot name into a space). Passwords are stored as PBKDF2-SHA256 hashes.
package main

import (
	"crypto"
	"crypto/pbkdf2"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/subtle"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"flag"
	"log"
	"net/http"
	"os"
	"slices"
	"strings"
	"time"
)

type User struct {
	Salt       string `json:"salt"`
	Hash       string `json:"pbkdf2_sha256"`
	Iterations int    `json:"iterations"`
}

type Project struct {
	Public  bool                `json:"public"`
	Members map[string]string   `json:"members"` // user -> role
	Robots  map[string][]string `json:"robots"`  // robot name -> actions
}

type Config struct {
	Listen      string             `json:"listen"`
	TLSCert     string             `json:"tls_cert"`
	TLSKey      string             `json:"tls_key"`
	SigningKey  string             `json:"signing_key"`
	SigningCert string             `json:"signing_cert"`
	Issuer      string             `json:"issuer"`
	Service     string             `json:"service"`
	TTLSeconds  int                `json:"ttl_seconds"`
	Users       map[string]User    `json:"users"`
	Projects    map[string]Project `json:"projects"`
}

var roles = map[string][]string{
	"projectAdmin": {"pull", "push", "delete"}, "maintainer": {"pull", "push", "delete"},
	"developer": {"pull", "push"}, "guest": {"pull"}, "limitedGuest": {"pull"},
}

type access struct {
	Type    string   `json:"type"`
	Name    string   `json:"name"`
	Actions []string `json:"actions"`
}

func (c *Config) authenticate(r *http.Request) (name string, ok bool) {
	name, password, given := r.BasicAuth()
	if !given && r.Method == http.MethodPost && r.PostFormValue("grant_type") == "password" {
		// containerd's OAuth2 form; it encodes `+` as %2B, so decoding is safe here.
		name, password, given = r.PostFormValue("username"), r.PostFormValue("password"), true
	}
	if !given {
		return "", true // anonymous
	}
	user, known := c.Users[name]
	salt, _ := hex.DecodeString(user.Salt)
	want, _ := hex.DecodeString(user.Hash)
	got, err := pbkdf2.Key(sha256.New, password, salt, max(user.Iterations, 1), 32)
	if !known || err != nil || subtle.ConstantTimeCompare(got, want) != 1 {
		return name, false
	}
	return name, true
}

// allowed: the actions `user` ("" = anonymous) may take on repository `repo`.
func (c *Config) allowed(user, repo string) []string {
	projectName, _, _ := strings.Cut(repo, "/")
	project, found := c.Projects[projectName]
	if !found {
		return nil
	}
	var actions []string
	if project.Public {
		actions = append(actions, "pull")
	}
	if robot, ok := strings.CutPrefix(user, "robot$"+projectName+"+"); ok {
		actions = append(actions, project.Robots[robot]...)
	} else if role, ok := project.Members[user]; ok && user != "" {
		actions = append(actions, roles[role]...)
	}
	return actions
}

func (c *Config) grant(user string, scopes []string) []access {
	granted := []access{}
	for _, scope := range scopes {
		parts := strings.Split(scope, ":") // repository:<name>:<actions>; a name may hold a port
		if len(parts) < 3 || parts[0] != "repository" {
			continue
		}
		name := strings.Join(parts[1:len(parts)-1], ":")
		allowed := c.allowed(user, name)
		actions := []string{}
		for _, a := range strings.Split(parts[len(parts)-1], ",") {
			if (slices.Contains(allowed, a) || (a == "*" && len(allowed) > 0)) && !slices.Contains(actions, a) {
				actions = append(actions, a)
			}
		}
		granted = append(granted, access{Type: "repository", Name: name, Actions: actions})
	}
	return granted
}

func b64(v []byte) string { return base64.RawURLEncoding.EncodeToString(v) }

func (c *Config) sign(key *rsa.PrivateKey, certDER []byte, user string, granted []access) (string, error) {
	header, _ := json.Marshal(map[string]any{
		"typ": "JWT", "alg": "RS256", "x5c": []string{base64.StdEncoding.EncodeToString(certDER)},
	})
	now := time.Now()
	jti := make([]byte, 16)
	rand.Read(jti)
	claims, _ := json.Marshal(map[string]any{
		"iss": c.Issuer, "sub": user, "aud": c.Service, "iat": now.Unix(), "nbf": now.Unix() - 5,
		"exp": now.Unix() + int64(c.TTLSeconds), "jti": hex.EncodeToString(jti), "access": granted,
	})
	signed := b64(header) + "." + b64(claims)
	digest := sha256.Sum256([]byte(signed))
	signature, err := rsa.SignPKCS1v15(rand.Reader, key, crypto.SHA256, digest[:])
	return signed + "." + b64(signature), err
}

func pemBlock(path string) []byte {
	data, err := os.ReadFile(path)
	if err != nil {
		log.Fatal(err)
	}
	block, _ := pem.Decode(data)
	if block == nil {
		log.Fatalf("%s: no PEM block", path)
	}
	return block.Bytes
}

func main() {
	configPath := flag.String("config", "tokenserver.json", "configuration file")
	flag.Parse()
	var c Config
	data, err := os.ReadFile(*configPath)
	if err == nil {
		err = json.Unmarshal(data, &c)
	}
	if err != nil {
		log.Fatalf("config %s: %v", *configPath, err)
	}
	parsed, err := x509.ParsePKCS8PrivateKey(pemBlock(c.SigningKey))
	key, isRSA := parsed.(*rsa.PrivateKey)
	if err != nil || !isRSA {
		log.Fatalf("signing key %s: not an RSA PKCS#8 key (%v)", c.SigningKey, err)
	}
	certDER := pemBlock(c.SigningCert)

	http.HandleFunc("/token", func(w http.ResponseWriter, r *http.Request) {
		user, ok := c.authenticate(r)
		scopes := r.URL.Query()["scope"]
		if r.Method == http.MethodPost {
			scopes = append(scopes, strings.Fields(r.PostFormValue("scope"))...)
		}
		if !ok {
			log.Printf("token: %q refused (wrong user or password)", user)
			w.Header().Set("WWW-Authenticate", `Basic realm="manifest-lab token"`)
			http.Error(w, `{"errors":[{"code":"UNAUTHORIZED","message":"wrong user name or password"}]}`, http.StatusUnauthorized)
			return
		}
		granted := c.grant(user, scopes)
		token, err := c.sign(key, certDER, user, granted)
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		log.Printf("token: %q granted %v", user, granted)
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(map[string]any{
			"token": token, "access_token": token, "expires_in": c.TTLSeconds,
			"issued_at": time.Now().UTC().Format(time.RFC3339),
		})
	})
	log.Printf("listening on https://%s", c.Listen)
	log.Fatal(http.ListenAndServeTLS(c.Listen, c.TLSCert, c.TLSKey, nil))
}
