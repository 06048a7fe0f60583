import { createHash } from 'node:crypto'
import { mkdir, readFile, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { exportJWK, exportPKCS8, generateKeyPair, importJWK, importPKCS8, importSPKI, type CryptoKey, type JWK } from 'jose'
import type { Logger } from './log.js'

export const signingAlg = 'EdDSA'

export interface SigningKey {
  kid: string
  privateKey: CryptoKey
  publicJwk: JWK
}

export interface VerifyKey {
  kid: string
  key: CryptoKey
  publicJwk: JWK
}

export interface KeySet {
  signing: SigningKey
  /** The signing key's public half first, then retired keys that still verify (rotation). */
  verifying: VerifyKey[]
}

export interface KeySources {
  /** PEM (PKCS#8) or JWK JSON of the Ed25519 private key that signs. */
  privateKey?: string
  /** PEMs (SPKI) or JWKs of retired public keys that still verify, as a JSON array of strings/objects. */
  previousPublicKeys?: string
  /** Where a development key is generated when no private key is configured. */
  devKeysDir: string
}

/** Loads the signing and verifying keys from configuration, or makes a development key on first start. */
export async function loadKeys(sources: KeySources, log: Logger): Promise<KeySet> {
  const pem = sources.privateKey ?? (await devKey(sources.devKeysDir, log))
  const signing = await importPrivate(pem)
  const previous = sources.previousPublicKeys ? await importPublics(sources.previousPublicKeys) : []
  return {
    signing,
    verifying: [{ kid: signing.kid, key: await importJWK(signing.publicJwk, signingAlg) as CryptoKey, publicJwk: signing.publicJwk }, ...previous],
  }
}

async function importPrivate(text: string): Promise<SigningKey> {
  const trimmed = text.trim()
  const privateKey = trimmed.startsWith('{')
    ? ((await importJWK(JSON.parse(trimmed) as JWK, signingAlg, { extractable: true })) as CryptoKey)
    : await importPKCS8(trimmed, signingAlg, { extractable: true })
  const jwk = await exportJWK(privateKey)
  const publicJwk: JWK = { kty: jwk.kty, crv: jwk.crv, x: jwk.x }
  const kid = thumbprintKid(publicJwk)
  return { kid, privateKey, publicJwk: { ...publicJwk, kid, alg: signingAlg, use: 'sig' } }
}

async function importPublics(text: string): Promise<VerifyKey[]> {
  const entries = JSON.parse(text) as (string | JWK)[]
  return Promise.all(
    entries.map(async (entry) => {
      if (typeof entry !== 'string' && 'd' in entry) {
        // A private JWK would import as a key jose refuses to verify with: every token of that kid would fail.
        throw new Error('JWT_PREVIOUS_PUBLIC_KEYS must hold public keys only (a JWK there has a private part `d`)')
      }
      const key =
        typeof entry === 'string'
          ? await importSPKI(entry, signingAlg, { extractable: true })
          : ((await importJWK({ kty: entry.kty, crv: entry.crv, x: entry.x }, signingAlg, { extractable: true })) as CryptoKey)
      const jwk = await exportJWK(key)
      const publicJwk: JWK = { kty: jwk.kty, crv: jwk.crv, x: jwk.x }
      const kid = thumbprintKid(publicJwk)
      return { kid, key, publicJwk: { ...publicJwk, kid, alg: signingAlg, use: 'sig' } }
    }),
  )
}

/** A short, stable key id derived from the public key, so every node names the same key the same way. */
function thumbprintKid(jwk: JWK): string {
  return createHash('sha256').update(`${jwk.crv}:${jwk.x}`).digest('base64url').slice(0, 16)
}

async function devKey(dir: string, log: Logger): Promise<string> {
  const file = join(dir, 'jwt-signing-key.pem')
  try {
    return await readFile(file, 'utf8')
  } catch {
    const { privateKey } = await generateKeyPair(signingAlg, { crv: 'Ed25519', extractable: true })
    const pem = await exportPKCS8(privateKey)
    await mkdir(dir, { recursive: true, mode: 0o700 })
    // `wx`: two nodes starting together must not overwrite each other's key.
    await writeFile(file, pem, { mode: 0o600, flag: 'wx' }).catch(() => undefined)
    log.warn({ file }, 'no JWT_PRIVATE_KEY configured: generated a development signing key (do not use in production)')
    return readFile(file, 'utf8')
  }
}
