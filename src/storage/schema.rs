//! Diesel schema shared by both backends. Only types the `MultiConnection` backend carries are
//! used: `Binary`, `Integer`, `BigInt`, `Text` (and their `Nullable`s). Written by hand to match
//! `migrations/{postgres,sqlite}`; timestamps are unix milliseconds supplied by the application.

diesel::table! {
    keks (version) {
        version -> Integer,
        state -> Text,
        created_at -> BigInt,
        retired_at -> Nullable<BigInt>,
        destroyed_at -> Nullable<BigInt>,
        keystore -> Text,
        mac -> Nullable<Binary>,
    }
}

diesel::table! {
    masters (namespace, version) {
        namespace -> Text,
        version -> Integer,
        state -> Text,
        compromised_at -> Nullable<BigInt>,
        kek_version -> Integer,
        wrapped -> Nullable<Binary>,
        salt -> Binary,
        created_at -> BigInt,
        updated_at -> BigInt,
        mac -> Nullable<Binary>,
    }
}

diesel::table! {
    index_keys (namespace) {
        namespace -> Text,
        kek_version -> Integer,
        wrapped -> Binary,
        created_at -> BigInt,
    }
}

diesel::table! {
    records (id) {
        id -> Binary,
        namespace -> Text,
        blind_index -> Binary,
        name -> Text,
        format -> Integer,
        master_version -> Integer,
        dek_nonce -> Binary,
        wrapped_dek -> Binary,
        body_nonce -> Binary,
        body_ciphertext -> Binary,
        content_type -> Text,
        plaintext_len -> BigInt,
        revision -> BigInt,
        etag -> Text,
        created_at -> BigInt,
        updated_at -> BigInt,
    }
}

diesel::table! {
    credentials (id) {
        id -> Text,
        label -> Text,
        roles -> Text,
        namespaces -> Text,
        secret_hash -> Text,
        created_at -> BigInt,
        expires_at -> Nullable<BigInt>,
        revoked_at -> Nullable<BigInt>,
        mac -> Nullable<Binary>,
        rotated_from -> Nullable<Text>,
    }
}

diesel::table! {
    audit (id) {
        id -> BigInt,
        chain -> Text,
        seq -> BigInt,
        at -> BigInt,
        actor -> Text,
        request_id -> Text,
        operation -> Text,
        namespace -> Text,
        target -> Text,
        resident_tag -> Text,
        outcome -> Text,
        detail -> Text,
        prev_hash -> Binary,
        hash -> Binary,
    }
}

diesel::table! {
    audit_heads (chain) {
        chain -> Text,
        seq -> BigInt,
        hash -> Binary,
        mac -> Nullable<Binary>,
    }
}

diesel::table! {
    audit_checkpoints (id) {
        id -> BigInt,
        chain -> Text,
        seq -> BigInt,
        at -> BigInt,
        kek_version -> Integer,
        mac -> Binary,
    }
}

diesel::table! {
    credential_successors (id) {
        id -> Text,
        successor -> Text,
    }
}

diesel::table! {
    approvals (id) {
        id -> Text,
        operation -> Text,
        namespace -> Text,
        version -> BigInt,
        requested_by -> Text,
        requested_at -> BigInt,
        expires_at -> BigInt,
        decided_by -> Nullable<Text>,
        decided_at -> Nullable<BigInt>,
        mac -> Nullable<Binary>,
    }
}

diesel::table! {
    integrity_key (id) {
        id -> Integer,
        kek_version -> Integer,
        wrapped -> Binary,
        created_at -> BigInt,
    }
}

diesel::table! {
    audit_manifests (counter) {
        counter -> BigInt,
        at -> BigInt,
        prev -> Binary,
        heads_digest -> Binary,
        moved -> Binary,
        rollback_from -> Nullable<BigInt>,
        mac -> Binary,
    }
}

diesel::table! {
    audit_marks (chain) {
        chain -> Text,
        seq -> BigInt,
        hash -> Binary,
    }
}

diesel::table! {
    signer_keys (signer, version) {
        signer -> Text,
        version -> Integer,
        alg -> Text,
        kid -> Text,
        public_key -> Binary,
        token_id -> Nullable<Binary>,
        kek_version -> Nullable<Integer>,
        wrapped -> Nullable<Binary>,
        state -> Text,
        created_at -> BigInt,
        activate_at -> BigInt,
        updated_at -> BigInt,
        retire_at -> Nullable<BigInt>,
        certificate -> Nullable<Text>,
        mac -> Nullable<Binary>,
    }
}

diesel::table! {
    signer_usage (signer, version) {
        signer -> Text,
        version -> Integer,
        signatures -> BigInt,
    }
}

diesel::table! {
    trust_anchors (domain) {
        domain -> Text,
        pem -> Text,
        updated_at -> BigInt,
        mac -> Nullable<Binary>,
    }
}

diesel::table! {
    trust_anchor_proposals (approval) {
        approval -> Text,
        domain -> Text,
        pem -> Text,
        mac -> Nullable<Binary>,
    }
}

diesel::table! {
    trust_crls (domain, issuer) {
        domain -> Text,
        issuer -> Text,
        der -> Binary,
        this_update -> BigInt,
        updated_at -> BigInt,
        mac -> Nullable<Binary>,
    }
}

diesel::table! {
    trust_partners (domain, partner_id, version) {
        domain -> Text,
        partner_id -> Text,
        version -> Integer,
        chain -> Text,
        thumbprint -> Text,
        key_desc -> Text,
        not_before -> BigInt,
        not_after -> BigInt,
        created_at -> BigInt,
        revoked_reason -> Nullable<Text>,
        revoked_at -> Nullable<BigInt>,
        mac -> Nullable<Binary>,
    }
}

diesel::table! {
    share_receipts (jti) {
        jti -> Text,
        domain -> Text,
        partner_id -> Text,
        version -> Integer,
        thumbprint -> Text,
        namespace -> Text,
        resident_tag -> Text,
        record_name -> Text,
        revision -> BigInt,
        created_at -> BigInt,
    }
}

diesel::table! {
    trust_expiry_warnings (domain, partner_id, version, days) {
        domain -> Text,
        partner_id -> Text,
        version -> Integer,
        days -> Integer,
    }
}

diesel::allow_tables_to_appear_in_same_query!(
    keks,
    masters,
    index_keys,
    records,
    credentials,
    credential_successors,
    audit,
    audit_heads,
    audit_checkpoints,
    approvals,
    integrity_key,
    audit_manifests,
    audit_marks,
    signer_keys,
    signer_usage,
    trust_anchors,
    trust_anchor_proposals,
    trust_crls,
    trust_partners,
    share_receipts,
    trust_expiry_warnings
);
